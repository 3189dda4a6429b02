/* model.c - DiffSL text to loaded model in one call. */
#include <stdlib.h>

#include "dsk.h"
#include "model.h"

/* dsk_translate then dsk_jit_load; the intermediate C text is freed on every
   path.  *out is NULL unless DSK_OK is returned. */
int dsk_model_compile(const char *diffsl, const dsk_jit_options *opt, dsk_model **out,
                      dsk_status *st) {
  dsk_status_clear(st);
  if (!out) return dsk_status_set(st, DSK_E_ARG, "dsk_model_compile: out is NULL");
  *out = NULL;
  if (!diffsl) return dsk_status_set(st, DSK_E_ARG, "dsk_model_compile: source is NULL");
  char *c_source = NULL;
  int rc = dsk_translate(diffsl, &c_source, st);
  if (rc == DSK_OK) {
    if (c_source)
      rc = dsk_jit_load(c_source, opt, out, st);
    else
      rc = dsk_status_set(st, DSK_E_MODEL, "translator returned no C source");
  }
  free(c_source);
  return rc;
}
