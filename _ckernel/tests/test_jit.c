/* test_jit.c - the JIT loader and its cache, fed with hand-written C that
   implements the generated-code ABI (dsk_gen.h). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* mkdtemp */

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../dsk.h"
#include "runner.h"

void suite_jit(void);

/* Exponential decay u' = -k u, u(0) = a0, params (k, a0); the table's ABI
   version is the %d. */
static const char decay_fmt[] =
    "static int init(double *ws) { (void)ws; return 0; }\n"
    "static int set_inputs(const double *p, double *ws) { ws[0] = p[0]; ws[1] = p[1]; return 0; }\n"
    "static int u0(double t, const double *x, double *ws, double *u) { (void)t; (void)x; u[0] = ws[1]; return 0; }\n"
    "static int rhs(double t, const double *u, double *ws, double *f) {\n"
    "  (void)t; f[0] = -ws[0] * u[0]; return 0; }\n"
    "static int rhs_jvp(double t, const double *u, const double *v, double *ws, double *dws,\n"
    "                   double *f, double *df) {\n"
    "  (void)t; (void)dws; f[0] = -ws[0] * u[0]; df[0] = -ws[0] * v[0]; return 0; }\n"
    "static int out(double t, const double *u, double *ws, double *y) {\n"
    "  (void)t; (void)ws; y[0] = u[0]; return 0; }\n"
    "static const char *const names[] = {\"k\", \"a0\"};\n"
    "static const double defaults[] = {1.0, 1.0};\n"
    "static const dsk_gen_table table = {.abi_version = %d, .nstates = 1, .nparams = 2,\n"
    "  .nout = 1, .nws = 3, .n_slot = 2, .param_names = names, .default_params = defaults,\n"
    "  .init = init, .set_inputs = set_inputs, .eval = {[0] = u0, [1] = rhs, [3] = out},\n"
    "  .jvp_x = {[1] = rhs_jvp}};\n"
    "const dsk_gen_table *dsk_model_table(void) { return &table; }\n";

/* Returns malloc'd C source: the ABI text, then the decay model. */
static char *decay_source(int abi) {
  size_t n = strlen(DSK_GEN_TABLE_TEXT) + sizeof decay_fmt + 32;
  char *s = malloc(n);
  if (!s) return NULL;
  int k = snprintf(s, n, "%s", DSK_GEN_TABLE_TEXT);
  snprintf(s + k, n - (size_t)k, decay_fmt, abi);
  return s;
}

/* Removes a directory tree (no symlink following). */
static void rm_rf(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return;
  if (S_ISDIR(sb.st_mode)) {
    DIR *d = opendir(path);
    if (d) {
      struct dirent *e;
      while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        rm_rf(sub);
      }
      closedir(d);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

/* Counts directory entries; *other counts those that are not final cache
   files (<32 hex>.so), i.e. leftover temporaries. */
static int count_entries(const char *dir, int *other) {
  int n = 0;
  *other = 0;
  DIR *d = opendir(dir);
  if (!d) return -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    n++;
    size_t len = strlen(e->d_name);
    if (len != 35 || strcmp(e->d_name + 32, ".so") != 0) (*other)++;
  }
  closedir(d);
  return n;
}

static void test_load_and_cache(const char *root) {
  char *src = decay_source(DSK_GEN_ABI_VERSION);
  CHECK(src != NULL);
  if (!src) return;
  dsk_jit_options opt = {root, NULL};
  dsk_status st;
  dsk_model *m = NULL;
  long c0 = dsk_jit_compile_count();
  int rc = dsk_jit_load(src, &opt, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  CHECK(m != NULL);
  CHECK(dsk_jit_compile_count() == c0 + 1);
  if (m) {
    const dsk_gen_table *t = dsk_model_table(m);
    CHECK(t != NULL && t->abi_version == DSK_GEN_ABI_VERSION);
    CHECK(t != NULL && t->nstates == 1 && t->nparams == 2 && t->nws == 3);
    CHECK(t != NULL && strcmp(t->param_names[1], "a0") == 0);
    CHECK(strncmp(dsk_model_path(m), root, strlen(root)) == 0);
    CHECK(strstr(dsk_model_path(m), ".so") != NULL);
    struct stat sb;
    CHECK(stat(dsk_model_path(m), &sb) == 0 && (sb.st_mode & 022) == 0);
    double ws[3], u[1], f[1], p[2] = {2.0, 3.0};
    CHECK(t->init(ws) == 0 && t->set_inputs(p, ws) == 0 && t->eval[DSK_FN_U0](0.0, NULL, ws, u) == 0);
    CHECK(u[0] == 3.0);
    CHECK(t->eval[DSK_FN_RHS](0.0, u, ws, f) == 0 && f[0] == -6.0);
  }

  /* a hit: same text, same options, no compiler run */
  dsk_model *m2 = NULL;
  rc = dsk_jit_load(src, &opt, &m2, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  CHECK(dsk_jit_compile_count() == c0 + 1);
  CHECK(m && m2 && strcmp(dsk_model_path(m), dsk_model_path(m2)) == 0);
  CHECK(m && m2 && dsk_model_table(m) == dsk_model_table(m2));
  dsk_model_free(m2);

  int other;
  CHECK(count_entries(root, &other) == 1);
  CHECK(other == 0);

  /* a cached object that group can write is refused, and loads again once fixed */
  if (m) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dsk_model_path(m));
    CHECK(chmod(path, 0720) == 0);
    m2 = NULL;
    rc = dsk_jit_load(src, &opt, &m2, &st);
    CHECK(rc == DSK_E_JIT && m2 == NULL);
    CHECK_CONTAINS(st.msg, "writable by group or others");
    CHECK(chmod(path, 0700) == 0);
    rc = dsk_jit_load(src, &opt, &m2, &st);
    CHECK_MSG(rc == DSK_OK, "%s", st.msg);
    dsk_model_free(m2);
  }
  dsk_model_free(m);
  free(src);
}

static void test_compile_error(const char *root) {
  dsk_jit_options opt = {root, NULL};
  dsk_status st;
  dsk_model *m = (dsk_model *)&st; /* must be reset to NULL */
  long c0 = dsk_jit_compile_count();
  int rc = dsk_jit_load("int f(void) { return 1 +; }\n", &opt, &m, &st);
  CHECK(rc == DSK_E_JIT);
  CHECK(st.code == DSK_E_JIT);
  CHECK(m == NULL);
  CHECK(dsk_jit_compile_count() == c0 + 1);
  CHECK_CONTAINS(st.msg, "failed");
  CHECK_CONTAINS(st.msg, "error"); /* the compiler's own diagnostic */
  int other;
  count_entries(root, &other);
  CHECK_MSG(other == 0, "temporary files left in %s", root);

  /* a missing compiler */
  dsk_jit_options bad = {root, "/nonexistent/dsk-no-such-cc -O0"};
  rc = dsk_jit_load("int x;\n", &bad, &m, &st);
  CHECK(rc == DSK_E_JIT && m == NULL);
  CHECK_CONTAINS(st.msg, "/nonexistent/dsk-no-such-cc");

  /* an empty text compiles (no table): refused at dlsym */
  rc = dsk_jit_load("int dsk_unused_symbol;\n", &opt, &m, &st);
  CHECK(rc == DSK_E_JIT && m == NULL);
  CHECK_CONTAINS(st.msg, "dsk_model_table");
}

static void test_wrong_abi(const char *root) {
  char *src = decay_source(DSK_GEN_ABI_VERSION + 998);
  CHECK(src != NULL);
  if (!src) return;
  dsk_jit_options opt = {root, NULL};
  dsk_status st;
  dsk_model *m = NULL;
  int rc = dsk_jit_load(src, &opt, &m, &st);
  CHECK(rc == DSK_E_JIT && m == NULL);
  char want[64];
  snprintf(want, sizeof want, "ABI version %d", DSK_GEN_ABI_VERSION + 998);
  CHECK_CONTAINS(st.msg, want);
  snprintf(want, sizeof want, "ABI version %d", DSK_GEN_ABI_VERSION);
  CHECK_CONTAINS(st.msg, want);
  free(src);
}

static void test_cache_dirs(const char *root) {
  char *src = decay_source(DSK_GEN_ABI_VERSION);
  if (!src) return;
  dsk_status st;
  dsk_model *m = NULL;

  /* group-writable directory refused */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/shared", root);
  CHECK(mkdir(dir, 0700) == 0);
  CHECK(chmod(dir, 0770) == 0);
  dsk_jit_options opt = {dir, NULL};
  int rc = dsk_jit_load(src, &opt, &m, &st);
  CHECK(rc == DSK_E_JIT && m == NULL);
  CHECK_CONTAINS(st.msg, "writable by group or others");
  CHECK_CONTAINS(st.msg, dir);

  /* a file where the directory should be */
  snprintf(dir, sizeof dir, "%s/afile", root);
  FILE *f = fopen(dir, "w");
  if (f) fclose(f);
  opt.cache_dir = dir;
  rc = dsk_jit_load(src, &opt, &m, &st);
  CHECK(rc == DSK_E_JIT && m == NULL);
  CHECK_CONTAINS(st.msg, "not a directory");

  /* $DIFFSOL_PYTORCH_CACHE, with missing parents created 0700 */
  const char *old = getenv("DIFFSOL_PYTORCH_CACHE");
  char *saved = old ? strdup(old) : NULL;
  snprintf(dir, sizeof dir, "%s/env/a/b", root);
  setenv("DIFFSOL_PYTORCH_CACHE", dir, 1);
  rc = dsk_jit_load(src, NULL, &m, &st);
  CHECK_MSG(rc == DSK_OK, "%s", st.msg);
  CHECK(m && strncmp(dsk_model_path(m), dir, strlen(dir)) == 0);
  struct stat sb;
  CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
  snprintf(dir, sizeof dir, "%s/env/a", root);
  CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 077) == 0);
  dsk_model_free(m);
  if (saved)
    setenv("DIFFSOL_PYTORCH_CACHE", saved, 1);
  else
    unsetenv("DIFFSOL_PYTORCH_CACHE");
  free(saved);
  free(src);
}

static void test_args(void) {
  dsk_status st;
  dsk_model *m = NULL;
  CHECK(dsk_jit_load(NULL, NULL, &m, &st) == DSK_E_ARG);
  CHECK(dsk_jit_load("int x;", NULL, NULL, &st) == DSK_E_ARG);
  CHECK(dsk_model_table(NULL) == NULL);
  CHECK(dsk_model_path(NULL) == NULL);
  dsk_model_free(NULL);

  /* status helpers: truncation-safe */
  char big[3 * DSK_MSG_MAX];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK(dsk_status_set(&st, DSK_E_ARG, "%s", big) == DSK_E_ARG);
  CHECK(st.code == DSK_E_ARG && strlen(st.msg) == DSK_MSG_MAX - 1);
  dsk_status_clear(&st);
  CHECK(st.code == DSK_OK && st.msg[0] == '\0' && st.line == 0 && st.t == 0.0);
  CHECK(dsk_status_set(NULL, DSK_E_JIT, "ignored") == DSK_E_JIT);
}

typedef struct load_job {
  const char *src;
  const char *root;
  int rc;
  const dsk_gen_table *tab;
} load_job;

static void *load_thread(void *arg) {
  load_job *job = arg;
  dsk_jit_options opt = {job->root, NULL};
  dsk_status st;
  dsk_model *m = NULL;
  job->rc = dsk_jit_load(job->src, &opt, &m, &st);
  job->tab = m ? dsk_model_table(m) : NULL;
  if (m && job->tab->nstates != 1) job->rc = -1;
  dsk_model_free(m);
  return NULL;
}

/* Several threads load the same new text at once: all succeed, each runs
   the compiler at most once, and no temporary files remain. */
static void test_threads(const char *root) {
  char *base = decay_source(DSK_GEN_ABI_VERSION);
  if (!base) return;
  size_t n = strlen(base) + 64;
  char *src = malloc(n);
  if (!src) {
    free(base);
    return;
  }
  snprintf(src, n, "/* threads */\n%s", base);
  enum { NTH = 6 };
  pthread_t th[NTH];
  load_job jobs[NTH];
  long c0 = dsk_jit_compile_count();
  int started = 0;
  for (int i = 0; i < NTH; i++) {
    jobs[i].src = src;
    jobs[i].root = root;
    jobs[i].rc = -2;
    if (pthread_create(&th[i], NULL, load_thread, &jobs[i]) == 0) started++;
    else break;
  }
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  CHECK(started == NTH);
  for (int i = 0; i < started; i++) CHECK(jobs[i].rc == DSK_OK);
  long dc = dsk_jit_compile_count() - c0;
  CHECK(dc >= 1 && dc <= started);
  int other;
  count_entries(root, &other);
  CHECK_MSG(other == 0, "temporary files left in %s", root);
  free(src);
  free(base);
}

/* The source index: a second dsk_model_compile of the same DiffSL text loads
   from <key>.idx without translating (no new entry, same object, the
   translator's patterns); a damaged or lying entry, or a deleted object, is a
   miss that compiles (or loads by the C key) and rewrites the entry. */
static int same_pattern(const dsk_sparsity *a, const dsk_sparsity *b) {
  if (a->nrows != b->nrows || a->ncols != b->ncols || a->nnz != b->nnz) return 0;
  if (!a->colptr || !b->colptr) return a->colptr == b->colptr;
  return memcmp(a->colptr, b->colptr, ((size_t)a->ncols + 1) * sizeof(int)) == 0 &&
         memcmp(a->rowidx, b->rowidx, (size_t)a->nnz * sizeof(int)) == 0;
}

static int find_index(const char *dir, char *path, size_t cap) {
  DIR *d = opendir(dir);
  int found = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    if (len > 4 && strcmp(e->d_name + len - 4, ".idx") == 0) {
      snprintf(path, cap, "%s/%s", dir, e->d_name);
      found++;
    }
  }
  if (d) closedir(d);
  return found;
}

static void test_source_index(const char *root) {
  /* a DAE with a sparse Jacobian and a mass matrix: both patterns go through the index */
  static const char src[] = "in_i { k = 0.5 }\nu_i { x = 1, y = 0, z = 0 }\n"
                            "dudt_i { dx = 0, dy = 0, dz = 0 }\nM_i { dx, dy, 0 }\n"
                            "F_i { -k * x, k * x - y, z - x - y }\n";
  char dir[4096], idx[4200];
  snprintf(dir, sizeof dir, "%s/index", root);
  dsk_jit_options opt = {dir, NULL};
  dsk_status st;
  dsk_translation tr;
  dsk_model *m = NULL, *m2 = NULL;
  CHECK_MSG(dsk_translate_ex(src, &tr, &st) == DSK_OK, "%s", st.msg);
  long c0 = dsk_jit_compile_count();
  CHECK_MSG(dsk_model_compile(src, &opt, &m, &st) == DSK_OK, "%s", st.msg);
  CHECK(dsk_jit_compile_count() == c0 + 1);
  CHECK(find_index(dir, idx, sizeof idx) == 1);
  struct stat sb;
  CHECK(stat(idx, &sb) == 0 && (sb.st_mode & 022) == 0);
  CHECK_MSG(dsk_model_compile(src, &opt, &m2, &st) == DSK_OK, "%s", st.msg);
  CHECK(dsk_jit_compile_count() == c0 + 1);
  if (m && m2) {
    CHECK(dsk_model_table(m) == dsk_model_table(m2));
    CHECK(same_pattern(dsk_model_jac_pattern(m2), &tr.jac));
    CHECK(same_pattern(dsk_model_mass_pattern(m2), &tr.mass));
    CHECK(dsk_model_jac_pattern(m2)->nnz < 9); /* sparse, not the dense fallback */
  }
  dsk_model_free(m2), m2 = NULL;
  /* the entry is what a hit reads: give it a (valid) dense Jacobian pattern and the
     loaded model has that one, not the translator's */
  {
    FILE *f = fopen(idx, "rb");
    char buf[4096];
    size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    size_t head = strlen("dsk-index 1\n") + 36, jac_end = head + 3 * sizeof(int) +
                  4 * sizeof(int) + (size_t)tr.jac.nnz * sizeof(int);
    CHECK(len > jac_end && len < sizeof buf);
    int dense[3 + 4 + 9] = {3, 3, 9, 0, 3, 6, 9, 0, 1, 2, 0, 1, 2, 0, 1, 2};
    f = len > jac_end ? fopen(idx, "wb") : NULL;
    if (f) {
      CHECK(fwrite(buf, 1, head, f) == head && fwrite(dense, sizeof dense, 1, f) == 1 &&
            fwrite(buf + jac_end, 1, len - jac_end, f) == len - jac_end);
      fclose(f);
      CHECK_MSG(dsk_model_compile(src, &opt, &m2, &st) == DSK_OK, "%s", st.msg);
      CHECK(m2 && dsk_model_jac_pattern(m2)->nnz == 9);
      dsk_model_free(m2), m2 = NULL;
    }
  }
  /* damaged entries: truncated, a row index out of range, garbage; each a miss that
     loads by the C key and rewrites the entry */
  for (int damage = 0; damage < 3; damage++) {
    FILE *f = fopen(idx, "r+b");
    CHECK(f != NULL);
    if (!f) break;
    if (damage == 0) {
      CHECK(ftruncate(fileno(f), 20) == 0);
    } else if (damage == 1) {
      int bad = 7; /* the first row index of the Jacobian: after magic, name, head, colptr */
      fseek(f, (long)(strlen("dsk-index 1\n") + 36 + 3 * sizeof(int) + 4 * sizeof(int)), SEEK_SET);
      CHECK(fwrite(&bad, sizeof bad, 1, f) == 1);
    } else {
      fseek(f, 0, SEEK_SET);
      CHECK(fputs("not an index at all\n", f) >= 0);
    }
    fclose(f);
    CHECK_MSG(dsk_model_compile(src, &opt, &m2, &st) == DSK_OK, "damage %d: %s", damage, st.msg);
    CHECK(m2 && same_pattern(dsk_model_jac_pattern(m2), &tr.jac));
    CHECK(m2 && same_pattern(dsk_model_mass_pattern(m2), &tr.mass));
    CHECK(dsk_jit_compile_count() == c0 + 1);
    dsk_model_free(m2), m2 = NULL;
  }
  /* an entry writable by others is not trusted (a miss) */
  CHECK(chmod(idx, 0622) == 0);
  CHECK_MSG(dsk_model_compile(src, &opt, &m2, &st) == DSK_OK, "%s", st.msg);
  dsk_model_free(m2), m2 = NULL;
  /* the object deleted: the entry is a miss, the model is compiled again */
  if (m) {
    char so[4096];
    snprintf(so, sizeof so, "%s", dsk_model_path(m));
    dsk_model_free(m), m = NULL;
    CHECK(unlink(so) == 0);
    CHECK_MSG(dsk_model_compile(src, &opt, &m2, &st) == DSK_OK, "%s", st.msg);
    CHECK(dsk_jit_compile_count() == c0 + 2);
    CHECK(m2 && same_pattern(dsk_model_jac_pattern(m2), &tr.jac));
    dsk_model_free(m2);
  }
  dsk_model_free(m);
  dsk_translation_free(&tr);
}

void suite_jit(void) {
  char root[] = "/tmp/dsk_test_jit_XXXXXX";
  if (!mkdtemp(root)) {
    CHECK(!"mkdtemp failed");
    return;
  }
  test_args();
  test_load_and_cache(root);
  test_compile_error(root);
  test_wrong_abi(root);
  test_threads(root);
  test_source_index(root);
  test_cache_dirs(root);
  rm_rf(root);
}
