/* error.c - dsk_status helpers.  A NULL status is accepted and ignored, so
   internal callers never need to test for it. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dsk.h"

void dsk_status_clear(dsk_status *st) {
  if (st) memset(st, 0, sizeof *st);
}

/* Sets st->code and formats st->msg (always NUL-terminated, silently
   truncated to DSK_MSG_MAX - 1 bytes).  line, col, t and flag are left as
   they are: callers that need them set them explicitly.  Returns code. */
int dsk_status_set(dsk_status *st, int code, const char *fmt, ...) {
  if (!st) return code;
  st->code = code;
  if (!fmt) {
    st->msg[0] = '\0';
    return code;
  }
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(st->msg, sizeof st->msg, fmt, ap);
  va_end(ap);
  if (n < 0) st->msg[0] = '\0';
  st->msg[sizeof st->msg - 1] = '\0';
  return code;
}
