/* model.h - internal: the definition of dsk_model (a loaded shared object). */
#ifndef DSK_MODEL_H
#define DSK_MODEL_H

#include "dsk.h"

#define DSK_PATH_MAX 4096

struct dsk_model {
  const dsk_gen_table *tab; /* from the object's dsk_model_table(); ABI checked */
  void *dl;                 /* dlopen handle, closed by dsk_model_free */
  char path[DSK_PATH_MAX];  /* cache file the object was loaded from */
};

#endif
