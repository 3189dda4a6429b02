/* test_corpus.c - robustness of dsk_translate on files and mutants.
 *
 *   corpus/bad/NAME.ds   malformed models: a positioned DSK_E_SYNTAX/DSK_E_MODEL
 *                        error, at the "// expect: L:C" of the file's first line
 *                        (or of the sidecar table below for files that cannot
 *                        hold a comment)
 *   corpus/good/NAME.ds  valid models: DSK_OK, and the same C text twice
 *   corpus/fuzz/NAME     inputs kept by the fuzzer (fuzz_translate.c): DSK_OK or
 *                        a positioned error, never anything else
 * plus ~200 deterministic random mutants of every good model, checked like
 * the fuzz files.  Nothing may leak (the runner runs under valgrind/ASan).
 *
 * The corpus is found relative to the working directory (the repository
 * root under meson/make): _ckernel/tests/corpus, tests/corpus or corpus,
 * else $DSK_CORPUS_DIR.  corpus/gen_bad.py regenerates corpus/bad.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "../dsk.h"
#include "runner.h"

void suite_corpus(void);

#define MUTANTS_PER_MODEL 200

/* Expected positions of files that cannot start with a comment. */
static const struct {
  const char *file;
  int line, col;
} sidecar[] = {
    {"empty.ds", 1, 1}, /* empty model: no u (model-level error at 1:1) */
};

/* ---- files ----------------------------------------------------------------- */

static int is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static const char *corpus_root(void) {
  static const char *const candidates[] = {"_ckernel/tests/corpus", "tests/corpus", "corpus"};
  const char *env;
  char probe[1024];
  for (size_t k = 0; k < sizeof candidates / sizeof candidates[0]; k++) {
    snprintf(probe, sizeof probe, "%s/good", candidates[k]);
    if (is_dir(probe)) return candidates[k];
  }
  env = getenv("DSK_CORPUS_DIR");
  if (env && *env) {
    snprintf(probe, sizeof probe, "%s/good", env);
    if (is_dir(probe)) return env;
  }
  return NULL;
}

/* Whole file, NUL-terminated (malloc'd), or NULL.  *n gets its size. */
static char *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t cap = 0, len = 0;
  if (!f) return NULL;
  for (;;) {
    size_t got;
    if (len + 4096 + 1 > cap) {
      size_t ncap = cap ? 2 * cap : 8192;
      char *nb;
      while (len + 4096 + 1 > ncap) ncap *= 2;
      nb = realloc(buf, ncap);
      if (!nb) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
      cap = ncap;
    }
    got = fread(buf + len, 1, 4096, f);
    len += got;
    if (got < 4096) break;
  }
  fclose(f);
  buf[len] = 0;
  *n = len;
  return buf;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the files in dir ending with suffix ("" for every file
   but dot files), as a malloc'd array of malloc'd names. */
static char **list_files(const char *dir, const char *suffix, int *count) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char **names = NULL;
  int n = 0, cap = 0;
  *count = 0;
  if (!d) return NULL;
  while ((de = readdir(d)) != NULL) {
    size_t len = strlen(de->d_name);
    size_t slen = strlen(suffix);
    char path[2048];
    if (de->d_name[0] == '.' || len <= slen || strcmp(de->d_name + len - slen, suffix) != 0)
      continue;
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    if (is_dir(path)) continue;
    if (n == cap) {
      char **nn;
      cap = cap ? 2 * cap : 64;
      nn = realloc(names, (size_t)cap * sizeof *names);
      if (!nn) break;
      names = nn;
    }
    names[n] = malloc(len + 1);
    if (!names[n]) break;
    memcpy(names[n], de->d_name, len + 1);
    n++;
  }
  closedir(d);
  if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
  *count = n;
  return names;
}

static void free_list(char **names, int n) {
  for (int k = 0; k < n; k++) free(names[k]);
  free(names);
}

/* ---- checks ------------------------------------------------------------------ */

/* Start of line `line` (1-based) of src and its length, or NULL when src
   has fewer lines. */
static const char *line_at(const char *src, int line, long *len) {
  const char *p = src;
  for (int l = 1; l < line; l++) {
    p = strchr(p, '\n');
    if (!p) return NULL;
    p++;
  }
  *len = (long)strcspn(p, "\n");
  return p;
}

/* Why an error status is malformed, or NULL when it is well-formed: code,
   no C, line:col inside src, "L:C: error:" prefix, then "  <source text>"
   and "  <blanks>^~~" lines with the '^' under the byte at line:col (the
   source text may be a window of a long line, so the check compares bytes,
   not offsets; at the end of a line the caret may sit just past the text). */
static const char *bad_error(const char *src, int rc, const char *c_source,
                             const dsk_status *st) {
  char prefix[64];
  const char *nl1, *nl2, *caret, *shown, *at;
  long len, k, nshown;
  if (rc != DSK_E_SYNTAX && rc != DSK_E_MODEL) return "code is not DSK_E_SYNTAX/DSK_E_MODEL";
  if (st->code != rc) return "st->code differs from the return code";
  if (c_source != NULL) return "c_source is not NULL after an error";
  if (st->line < 1 || st->col < 1) return "line or col < 1";
  at = line_at(src, st->line, &len);
  if (!at) return "line is past the end of the source";
  if (st->col > len + 1) return "col is past the end of its line";
  snprintf(prefix, sizeof prefix, "%d:%d: error:", st->line, st->col);
  if (strncmp(st->msg, prefix, strlen(prefix)) != 0) return "msg does not start with L:C: error:";
  nl1 = strchr(st->msg, '\n');
  if (!nl1) return "msg has no newline";
  nl2 = strchr(nl1 + 1, '\n');
  if (!nl2) return "msg has no caret line";
  caret = strchr(nl2 + 1, '^');
  if (!caret || strchr(nl2 + 1, '\n')) return "msg's third line is not a caret line";
  for (const char *p = nl2 + 1; p < caret; p++)
    if (*p != ' ' && *p != '\t') return "caret line has text before the '^'";
  if (strncmp(nl1 + 1, "  ", 2) != 0 || strncmp(nl2 + 1, "  ", 2) != 0)
    return "source and caret lines are not indented by two spaces";
  shown = nl1 + 3;
  nshown = (long)(nl2 - shown);
  k = (long)(caret - (nl2 + 3));
  if (k < 0) return "'^' is inside the indentation";
  at += st->col - 1;
  if (st->col - 1 < len && *at != '\r') {
    if (k >= nshown) return "'^' is past the end of the source text shown";
    if (shown[k] != *at) return "the byte above '^' is not the byte at line:col";
  } else if (k > nshown) {
    return "'^' is past the end of the source text shown";
  }
  return NULL;
}

static int expected_pos(const char *name, const char *src, int *line, int *col) {
  for (size_t k = 0; k < sizeof sidecar / sizeof sidecar[0]; k++)
    if (strcmp(sidecar[k].file, name) == 0) {
      *line = sidecar[k].line;
      *col = sidecar[k].col;
      return 1;
    }
  return sscanf(src, "// expect: %d:%d", line, col) == 2;
}

static void run_bad(const char *dir, const char *name) {
  char path[2048];
  size_t n;
  char *src, *c_source = (char *)"unset";
  dsk_status st;
  int rc, line, col;
  const char *why;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  src = read_file(path, &n);
  CHECK_MSG(src != NULL, "cannot read %s", path);
  if (!src) return;
  CHECK_MSG(strlen(src) == n, "%s contains a NUL byte", name);
  rc = dsk_translate(src, &c_source, &st);
  why = bad_error(src, rc, c_source, &st);
  CHECK_MSG(why == NULL, "bad/%s: %s (rc=%d %d:%d): %.300s", name, why ? why : "", rc, st.line,
            st.col, rc ? st.msg : "(compiled)");
  if (rc == DSK_OK) free(c_source);
  CHECK_MSG(expected_pos(name, src, &line, &col), "bad/%s has no '// expect: L:C' line", name);
  if (expected_pos(name, src, &line, &col))
    CHECK_MSG(st.line == line && st.col == col, "bad/%s: error at %d:%d, expected %d:%d: %.200s",
              name, st.line, st.col, line, col, rc ? st.msg : "(compiled)");
  free(src);
}

static void run_good(const char *dir, const char *name) {
  char path[2048];
  size_t n;
  char *src, *c1 = NULL, *c2 = NULL;
  dsk_status st;
  int rc;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  src = read_file(path, &n);
  CHECK_MSG(src != NULL, "cannot read %s", path);
  if (!src) return;
  rc = dsk_translate(src, &c1, &st);
  CHECK_MSG(rc == DSK_OK && c1 != NULL, "good/%s: rc=%d: %s", name, rc, st.msg);
  CHECK(st.line == 0 && st.col == 0);
  rc = dsk_translate(src, &c2, &st);
  CHECK_MSG(rc == DSK_OK && c2 != NULL, "good/%s (second time): rc=%d: %s", name, rc, st.msg);
  if (c1 && c2) CHECK_MSG(strcmp(c1, c2) == 0, "good/%s: two translations differ", name);
  free(c1);
  free(c2);
  free(src);
}

/* DSK_OK with C, or a well-formed positioned error.  Returns the reason it
   is not, or NULL. */
static const char *check_any(const char *src, int *rc_out, dsk_status *st) {
  char *c_source = (char *)"unset";
  int rc = dsk_translate(src, &c_source, st);
  const char *why = NULL;
  *rc_out = rc;
  if (rc == DSK_OK) {
    if (!c_source) why = "DSK_OK without C source";
    else if (st->line || st->col) why = "DSK_OK with a position";
    free(c_source);
    return why;
  }
  return bad_error(src, rc, c_source, st);
}

static void run_fuzz(const char *dir, const char *name) {
  char path[2048];
  size_t n;
  char *src;
  dsk_status st;
  int rc;
  const char *why;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  src = read_file(path, &n);
  CHECK_MSG(src != NULL, "cannot read %s", path);
  if (!src) return;
  why = check_any(src, &rc, &st);
  CHECK_MSG(why == NULL, "fuzz/%s: %s (rc=%d %d:%d): %.300s", name, why ? why : "", rc, st.line,
            st.col, st.msg);
  free(src);
}

/* ---- mutants --------------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) { /* xorshift64*, uniform enough for this */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 2685821657736338717ULL) >> 33) % (n ? n : 1);
}

static const char alphabet[] = "{}()[],:;=+-*/%._'\"a1 \n\xff";

/* One mutation of buf[0..*len) in place (cap bytes available, NUL kept). */
static void mutate(char *buf, size_t *len, size_t cap) {
  size_t n = *len, at = n ? rnd((uint32_t)n) : 0;
  char ch = alphabet[rnd(sizeof alphabet - 1)];
  switch (rnd(4)) {
    case 0: /* delete a byte */
      if (n) {
        memmove(buf + at, buf + at + 1, n - at - 1);
        n--;
      }
      break;
    case 1: /* insert a byte */
      if (n + 1 < cap) {
        at = rnd((uint32_t)n + 1);
        memmove(buf + at + 1, buf + at, n - at);
        buf[at] = ch;
        n++;
      }
      break;
    case 2: /* replace a byte */
      if (n) buf[at] = ch;
      break;
    default: { /* duplicate a span of up to 16 bytes right after itself */
      size_t span = n ? 1 + rnd(16) : 0;
      if (at + span > n) span = n - at;
      if (span && n + span < cap) {
        memmove(buf + at + 2 * span, buf + at + span, n - at - span);
        memcpy(buf + at + span, buf + at, span);
        n += span;
      }
    }
  }
  buf[n] = 0;
  *len = n;
}

static void run_mutants(const char *name, const char *orig, size_t n0, int *nok, int *nerr) {
  size_t cap = 2 * n0 + 256;
  char *buf = malloc(cap);
  int shown = 0, bad = 0;
  if (!buf) return;
  for (int m = 0; m < MUTANTS_PER_MODEL; m++) {
    size_t len = n0;
    int rc, nmut = 1 + (int)rnd(3);
    dsk_status st;
    const char *why;
    memcpy(buf, orig, n0 + 1);
    for (int k = 0; k < nmut; k++) mutate(buf, &len, cap);
    /* a mutant with a NUL would just be shorter: the alphabet has none */
    why = check_any(buf, &rc, &st);
    if (rc == DSK_OK) (*nok)++;
    else (*nerr)++;
    if (why) {
      bad++;
      if (shown++ < 3)
        printf("  mutant %d of %s: %s (rc=%d %d:%d) %.200s\n  source: %.300s\n", m, name, why,
               rc, st.line, st.col, st.msg, buf);
    }
  }
  CHECK_MSG(bad == 0, "%d of %d mutants of %s were not handled cleanly", bad, MUTANTS_PER_MODEL,
            name);
  free(buf);
}

/* ---- suite -------------------------------------------------------------------------- */

void suite_corpus(void) {
  const char *root = corpus_root();
  char dir[1024];
  char **names;
  int n, nbad = 0, ngood = 0, nfuzz = 0, nok = 0, nerr = 0;
  CHECK_MSG(root != NULL,
            "corpus not found: run from the repository root or set DSK_CORPUS_DIR");
  if (!root) return;

  snprintf(dir, sizeof dir, "%s/bad", root);
  names = list_files(dir, ".ds", &n);
  CHECK_MSG(n >= 45, "only %d files in %s", n, dir);
  for (int k = 0; k < n; k++) run_bad(dir, names[k]);
  nbad = n;
  free_list(names, n);

  snprintf(dir, sizeof dir, "%s/good", root);
  names = list_files(dir, ".ds", &n);
  CHECK_MSG(n >= 8, "only %d files in %s", n, dir);
  rng_state = 0x9E3779B97F4A7C15ULL; /* same mutants on every run */
  for (int k = 0; k < n; k++) {
    char path[2048];
    size_t len;
    char *src;
    run_good(dir, names[k]);
    snprintf(path, sizeof path, "%s/%s", dir, names[k]);
    src = read_file(path, &len);
    if (src) run_mutants(names[k], src, len, &nok, &nerr);
    free(src);
  }
  ngood = n;
  free_list(names, n);

  snprintf(dir, sizeof dir, "%s/fuzz", root);
  names = list_files(dir, "", &n);
  for (int k = 0; k < n; k++) run_fuzz(dir, names[k]);
  nfuzz = n;
  free_list(names, n);

  printf("corpus: %d bad, %d good, %d fuzz files; %d mutants (%d compiled, %d rejected)\n",
         nbad, ngood, nfuzz, nok + nerr, nok, nerr);
}
