/* model.c - DiffSL text to loaded model in one call. */
#include <stdlib.h>

#include "dsk.h"
#include "model.h"

/* The source index first (jit.c: no translation on a hit); else
   dsk_translate_ex, dsk_jit_open, then the translator's sparsity patterns are
   attached and the index entry written; everything intermediate is freed on
   every path.  *out is NULL unless DSK_OK is returned. */
int dsk_model_compile(const char *diffsl, const dsk_jit_options *opt, dsk_model **out,
                      dsk_status *st) {
  dsk_translation tr;
  int rc;
  dsk_status_clear(st);
  if (!out) return dsk_status_set(st, DSK_E_ARG, "dsk_model_compile: out is NULL");
  *out = NULL;
  if (!diffsl) return dsk_status_set(st, DSK_E_ARG, "dsk_model_compile: source is NULL");
  rc = dsk_jit_index_open(diffsl, opt, out, st);
  if (rc != DSK_OK || *out) return rc;
  rc = dsk_translate_ex(diffsl, &tr, st);
  if (rc != DSK_OK) return rc;
  rc = dsk_jit_open(tr.c_source, opt, out, st);
  if (rc == DSK_OK) {
    rc = dsk_model_attach_patterns(*out, &tr.jac, &tr.mass, st);
    if (rc != DSK_OK) {
      dsk_model_free(*out);
      *out = NULL;
    } else {
      dsk_jit_index_store(diffsl, opt, *out);
    }
  }
  dsk_translation_free(&tr);
  return rc;
}
