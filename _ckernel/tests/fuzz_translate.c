/* fuzz_translate.c - libFuzzer target for the DiffSL compiler (dsk_translate).
 *
 * Not part of dsk_tests: built with clang by `make fuzz`, e.g.
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I_ckernel \
 *     _ckernel/tests/fuzz_translate.c _ckernel/{error,lex,parse,sema,diff,emit_c,compile}.c -lm
 * Every input must give DSK_OK with C source, or DSK_E_SYNTAX/DSK_E_MODEL
 * with a 1-based position inside the input; anything else aborts (a crash
 * for libFuzzer), as do memory errors, UB and leaks.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../dsk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *src = malloc(size + 1);
  char *c_source = NULL;
  dsk_status st;
  int rc, lines = 1;
  if (!src) return 0;
  memcpy(src, data, size);
  src[size] = 0;
  for (size_t k = 0; k < size && src[k]; k++) lines += src[k] == '\n';
  rc = dsk_translate(src, &c_source, &st);
  if (rc == DSK_OK) {
    if (!c_source) abort();
  } else if (rc == DSK_E_SYNTAX || rc == DSK_E_MODEL) {
    if (c_source || st.line < 1 || st.col < 1 || st.line > lines) abort();
    if (!strchr(st.msg, '\n') || !strchr(st.msg, '^')) abort();
  } else {
    fprintf(stderr, "unexpected code %d: %s\n", rc, st.msg);
    abort();
  }
  free(c_source);
  free(src);
  return 0;
}
