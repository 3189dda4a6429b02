/*
 * jit.c - compile generated C into a shared object, cache it, load it.
 *
 * Cache key: two 64-bit FNV-1a hashes (different seeds) of the C text, the
 * compiler command string, that compiler's `--version` output, the flags and
 * DSK_GEN_ABI_VERSION, as 32 hex digits; the object is <cache dir>/<key>.so.
 * A miss compiles into temporary files in the cache directory and renames
 * the result into place (atomic; a concurrent process may win, which is
 * harmless since both wrote the same object).  The compiler runs through
 * posix_spawnp (no shell), with its stdout and stderr captured through a pipe.
 *
 * Source index (dsk_jit_index_open / _store): a cache hit by the C key still
 * needs the DiffSL text translated (to get the C) and the Jacobian pattern
 * rebuilt: 17 ms for a 256 KB model.  The index maps a key of the DiffSL
 * text itself (plus compiler, version, flags, ABI and this kernel's GNU build
 * id, so that another build of the translator never reuses an entry) to the
 * object's name and the model's sparsity patterns, in <key>.idx; a hit loads
 * the object and the patterns without translating.  Any problem with an
 * entry (missing, truncated, inconsistent, object gone) is a miss, and the
 * caller takes the full path, which rewrites the entry.  Without a build id
 * (a kernel linked without one) the index is off.
 *
 * Global state: the per-compiler version cache and the compile counter, both
 * under one mutex.
 */
#define _GNU_SOURCE /* dladdr, dl_iterate_phdr; implies the POSIX and default APIs */

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsk.h"
#include "model.h"

extern char **environ;

/* Flags that are part of the cache key (the -o/input arguments are not). */
static const char *const cc_flags_head[] = {"-O2", "-fPIC", "-shared", "-std=c99"};
static const char *const cc_flags_tail[] = {"-lm"};
#define N_HEAD (sizeof cc_flags_head / sizeof cc_flags_head[0])
#define N_TAIL (sizeof cc_flags_tail / sizeof cc_flags_tail[0])

#define VERSION_MAX 4096    /* bytes of `cc --version` kept */
#define CC_OUTPUT_MAX 1400  /* bytes of compiler diagnostics kept in a message */

/* ---- global state ------------------------------------------------------ */

typedef struct version_entry {
  char *cc;      /* compiler command string, as given */
  char *version; /* its --version output */
  struct version_entry *next;
} version_entry;

static pthread_mutex_t jit_lock = PTHREAD_MUTEX_INITIALIZER;
static version_entry *version_cache = NULL; /* entries live until exit */
static long compile_count = 0;

#if defined(__GNUC__)
/* Frees the version cache at exit so leak checkers see a clean process. */
__attribute__((destructor)) static void free_version_cache(void) {
  pthread_mutex_lock(&jit_lock);
  while (version_cache) {
    version_entry *e = version_cache;
    version_cache = e->next;
    free(e->cc);
    free(e->version);
    free(e);
  }
  pthread_mutex_unlock(&jit_lock);
}
#endif

long dsk_jit_compile_count(void) {
  pthread_mutex_lock(&jit_lock);
  long n = compile_count;
  pthread_mutex_unlock(&jit_lock);
  return n;
}

/* ---- small helpers ----------------------------------------------------- */

/* strerror is MT-safe in glibc >= 2.32 (the kernel's target platform). */
static const char *errtext(int e) { return strerror(e); }

static char *dup_string(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

typedef struct hash128 {
  uint64_t a, b;
} hash128;

static void hash_bytes(hash128 *h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h->a = (h->a ^ p[i]) * UINT64_C(1099511628211);
    h->b = (h->b ^ p[i]) * UINT64_C(1099511628211);
  }
}

/* Hashes s followed by a NUL, so consecutive fields cannot run together. */
static void hash_field(hash128 *h, const char *s) { hash_bytes(h, s, strlen(s) + 1); }

/* ---- compiler command -------------------------------------------------- */

/* A compiler command split on blanks: argv[0..argc-1] point into buf, and
   argv has room for the flags, -o, two file names and the NULL. */
typedef struct cc_cmd {
  const char *text; /* the command string as given (hashed, shown in messages) */
  char *buf;
  char **argv;
  int argc;
} cc_cmd;

static void cc_cmd_free(cc_cmd *c) {
  free(c->buf);
  free(c->argv);
  c->buf = NULL;
  c->argv = NULL;
}

static int cc_cmd_init(cc_cmd *c, const dsk_jit_options *opt, dsk_status *st) {
  const char *cc = opt && opt->cc && opt->cc[0] ? opt->cc : NULL;
  if (!cc) {
    const char *env = getenv("CC");
    cc = env && env[0] ? env : "cc";
  }
  c->text = cc;
  c->argc = 0;
  c->buf = dup_string(cc);
  size_t ntok = strlen(cc) / 2 + 1;
  c->argv = malloc((ntok + N_HEAD + N_TAIL + 5) * sizeof *c->argv);
  if (!c->buf || !c->argv) {
    cc_cmd_free(c);
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  }
  for (char *p = c->buf; *p;) {
    while (*p == ' ' || *p == '\t') *p++ = '\0';
    if (!*p) break;
    c->argv[c->argc++] = p;
    while (*p && *p != ' ' && *p != '\t') p++;
  }
  c->argv[c->argc] = NULL;
  if (c->argc == 0) {
    cc_cmd_free(c);
    return dsk_status_set(st, DSK_E_JIT, "the C compiler command is empty");
  }
  return DSK_OK;
}

/* ---- running a process -------------------------------------------------- */

/* Runs argv (argv[0] searched in PATH, no shell) with stdin from /dev/null and
   stdout+stderr captured.  The first cap-1 bytes of output go to buf
   (NUL-terminated); the rest is read and dropped; *truncated tells which.
   Returns 0 with *wstatus from waitpid, or an errno value if the process could
   not be started or waited for. */
static int run_capture(char *const argv[], char *buf, size_t cap, int *truncated,
                       int *wstatus) {
  int fds[2];
  size_t len = 0;
  buf[0] = '\0';
  *truncated = 0;
  if (pipe(fds) != 0) return errno;
  /* close-on-exec keeps both ends out of other threads' children; the
     dup2'ed copies in our child are not close-on-exec */
  (void)fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  (void)fcntl(fds[1], F_SETFD, FD_CLOEXEC);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  int err = posix_spawn_file_actions_init(&fa);
  if (err) {
    close(fds[0]);
    close(fds[1]);
    return err;
  }
  err = posix_spawnattr_init(&attr);
  if (err) {
    posix_spawn_file_actions_destroy(&fa);
    close(fds[0]);
    close(fds[1]);
    return err;
  }
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  if (!err) err = posix_spawnattr_setsigmask(&attr, &empty);
  if (!err) err = posix_spawnattr_setsigdefault(&attr, &defaults);
  if (!err) err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (!err) err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (!err) err = posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  if (!err) err = posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  pid_t pid = -1;
  if (!err) err = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(fds[1]);
  if (err) {
    close(fds[0]);
    return err;
  }

  for (;;) {
    char chunk[4096];
    ssize_t n = read(fds[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size_t keep = (size_t)n;
    if (len + keep > cap - 1) {
      keep = cap - 1 - len;
      *truncated = 1;
    }
    memcpy(buf + len, chunk, keep);
    len += keep;
  }
  if (!*truncated)
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) len--;
  buf[len] = '\0';
  close(fds[0]);

  while (waitpid(pid, wstatus, 0) < 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

/* Describes a waitpid status ("exit status 1", "signal 11"). */
static void describe_wstatus(int ws, char *buf, size_t n) {
  if (WIFEXITED(ws))
    snprintf(buf, n, "exit status %d", WEXITSTATUS(ws));
  else if (WIFSIGNALED(ws))
    snprintf(buf, n, "signal %d", WTERMSIG(ws));
  else
    snprintf(buf, n, "wait status %d", ws);
}


/* The compiler command, its --version output, the flags and the generated-code
   ABI: the part of every cache key that names the toolchain. */
static void hash_toolchain(hash128 *h, const cc_cmd *cc, const char *version) {
  char abi[32];
  snprintf(abi, sizeof abi, "abi %d", DSK_GEN_ABI_VERSION);
  hash_field(h, cc->text);
  hash_field(h, version);
  for (size_t i = 0; i < N_HEAD; i++) hash_field(h, cc_flags_head[i]);
  for (size_t i = 0; i < N_TAIL; i++) hash_field(h, cc_flags_tail[i]);
  hash_field(h, abi);
}

/* Returns (in *version) the `--version` output of the compiler command,
   running it once per process per command string.  The returned text lives
   until process exit. */
static int cc_version(cc_cmd *c, const char **version, dsk_status *st) {
  int rc = DSK_OK;
  pthread_mutex_lock(&jit_lock);
  for (version_entry *e = version_cache; e; e = e->next) {
    if (strcmp(e->cc, c->text) == 0) {
      *version = e->version;
      pthread_mutex_unlock(&jit_lock);
      return DSK_OK;
    }
  }
  char *out = malloc(VERSION_MAX);
  version_entry *e = malloc(sizeof *e);
  char *cc = dup_string(c->text);
  if (!out || !e || !cc) {
    rc = dsk_status_set(st, DSK_E_NOMEM, "out of memory");
    goto done;
  }
  c->argv[c->argc] = "--version";
  c->argv[c->argc + 1] = NULL;
  int truncated, ws;
  int err = run_capture(c->argv, out, VERSION_MAX, &truncated, &ws);
  c->argv[c->argc] = NULL;
  if (err) {
    rc = dsk_status_set(st, DSK_E_JIT, "cannot run the C compiler '%s': %s (set CC or the cc option)",
                        c->text, errtext(err));
    goto done;
  }
  /* A non-zero exit is not fatal here: the output (or its absence) still
     identifies the compiler, and a broken compiler fails at compile time. */
  e->cc = cc;
  e->version = out;
  e->next = version_cache;
  version_cache = e;
  *version = out;
  out = NULL;
  e = NULL;
  cc = NULL;
done:
  pthread_mutex_unlock(&jit_lock);
  free(out);
  free(e);
  free(cc);
  return rc;
}

/* ---- cache directory ---------------------------------------------------- */

/* Writes the cache directory for opt into dir (DSK_PATH_MAX bytes). */
static int resolve_cache_dir(const dsk_jit_options *opt, char *dir, dsk_status *st) {
  const char *base = NULL, *suffix = "";
  const char *env;
  if (opt && opt->cache_dir && opt->cache_dir[0]) {
    base = opt->cache_dir;
  } else if ((env = getenv("DIFFSOL_PYTORCH_CACHE")) && env[0]) {
    base = env;
  } else if ((env = getenv("XDG_CACHE_HOME")) && env[0]) {
    base = env;
    suffix = "/diffsol_pytorch";
  } else if ((env = getenv("HOME")) && env[0]) {
    base = env;
    suffix = "/.cache/diffsol_pytorch";
  } else {
    return dsk_status_set(st, DSK_E_JIT,
                          "no cache directory: set DIFFSOL_PYTORCH_CACHE, XDG_CACHE_HOME or HOME");
  }
  int n = snprintf(dir, DSK_PATH_MAX, "%s%s", base, suffix);
  if (n < 0 || n >= DSK_PATH_MAX - 64)
    return dsk_status_set(st, DSK_E_JIT, "cache directory path too long: %s%s", base, suffix);
  return DSK_OK;
}

/* Refuses a path (directory or cache file) that is not ours or that group or
   others may write. */
static int check_owner_mode(const char *path, const struct stat *sb, const char *what,
                            dsk_status *st) {
  if (sb->st_uid != geteuid())
    return dsk_status_set(st, DSK_E_JIT,
                          "refusing to use %s '%s': owned by uid %ld, not by the current user (uid %ld)",
                          what, path, (long)sb->st_uid, (long)geteuid());
  if (sb->st_mode & (S_IWGRP | S_IWOTH))
    return dsk_status_set(st, DSK_E_JIT,
                          "refusing to use %s '%s': writable by group or others (mode %03o); "
                          "run chmod go-w on it",
                          what, path, (unsigned)(sb->st_mode & 0777));
  return DSK_OK;
}

/* Creates dir and its missing parents with mode 0700, then checks that dir
   is a directory that only the current user can write. */
static int ensure_cache_dir(const char *dir, dsk_status *st) {
  char buf[DSK_PATH_MAX];
  snprintf(buf, sizeof buf, "%s", dir);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
      return dsk_status_set(st, DSK_E_JIT, "cannot create cache directory '%s': %s", buf,
                            errtext(errno));
    *p = '/';
  }
  if (mkdir(buf, 0700) != 0 && errno != EEXIST)
    return dsk_status_set(st, DSK_E_JIT, "cannot create cache directory '%s': %s", buf,
                          errtext(errno));
  struct stat sb;
  if (stat(dir, &sb) != 0)
    return dsk_status_set(st, DSK_E_JIT, "cannot access cache directory '%s': %s", dir,
                          errtext(errno));
  if (!S_ISDIR(sb.st_mode))
    return dsk_status_set(st, DSK_E_JIT, "cache directory '%s' is not a directory", dir);
  return check_owner_mode(dir, &sb, "cache directory", st);
}

/* ---- compiling ------------------------------------------------------------ */

/* Writes all of text to fd (which is closed, also on error). */
static int write_all_and_close(int fd, const char *text) {
  size_t len = strlen(text), done = 0;
  int err = 0;
  while (done < len) {
    ssize_t n = write(fd, text + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    done += (size_t)n;
  }
  if (close(fd) != 0 && !err) err = errno;
  return err;
}

/* Runs the compiler on c_path, writing so_path; on failure the message holds
   the command's (truncated) output. */
static int run_compiler(cc_cmd *c, const char *c_path, const char *so_path, dsk_status *st) {
  int k = c->argc;
  for (size_t i = 0; i < N_HEAD; i++) c->argv[k++] = (char *)cc_flags_head[i];
  c->argv[k++] = "-o";
  c->argv[k++] = (char *)so_path;
  c->argv[k++] = (char *)c_path;
  for (size_t i = 0; i < N_TAIL; i++) c->argv[k++] = (char *)cc_flags_tail[i];
  c->argv[k] = NULL;

  pthread_mutex_lock(&jit_lock);
  compile_count++;
  pthread_mutex_unlock(&jit_lock);

  char *out = malloc(CC_OUTPUT_MAX);
  if (!out) {
    c->argv[c->argc] = NULL;
    return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  }
  int truncated = 0, ws = 0, rc = DSK_OK;
  int err = run_capture(c->argv, out, CC_OUTPUT_MAX, &truncated, &ws);
  c->argv[c->argc] = NULL;
  if (err) {
    rc = dsk_status_set(st, DSK_E_JIT, "cannot run the C compiler '%s': %s", c->text,
                        errtext(err));
  } else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
    char how[64];
    describe_wstatus(ws, how, sizeof how);
    rc = dsk_status_set(st, DSK_E_JIT, "the C compiler '%s' failed (%s) on generated code:\n%s%s",
                        c->text, how, out, truncated ? "\n[... output truncated]" : "");
  }
  free(out);
  return rc;
}

/* Compiles c_source into final_path: temp .c and .so in dir, compile, rename.
   Temporary files are removed on every path. */
static int compile_to_cache(cc_cmd *c, const char *dir, const char *key, const char *c_source,
                            const char *final_path, dsk_status *st) {
  char c_path[DSK_PATH_MAX], so_path[DSK_PATH_MAX];
  int n1 = snprintf(c_path, sizeof c_path, "%s/%s-XXXXXX.c", dir, key);
  int n2 = snprintf(so_path, sizeof so_path, "%s/%s-XXXXXX.so", dir, key);
  if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof c_path || (size_t)n2 >= sizeof so_path)
    return dsk_status_set(st, DSK_E_JIT, "cache directory path too long: %s", dir);
  int have_c = 0, have_so = 0, rc = DSK_OK;

  int fd = mkstemps(c_path, 2);
  if (fd < 0) {
    rc = dsk_status_set(st, DSK_E_JIT, "cannot create a temporary file in '%s': %s", dir,
                        errtext(errno));
    goto done;
  }
  have_c = 1;
  int err = write_all_and_close(fd, c_source);
  if (err) {
    rc = dsk_status_set(st, DSK_E_JIT, "cannot write '%s': %s", c_path, errtext(err));
    goto done;
  }
  fd = mkstemps(so_path, 3);
  if (fd < 0) {
    rc = dsk_status_set(st, DSK_E_JIT, "cannot create a temporary file in '%s': %s", dir,
                        errtext(errno));
    goto done;
  }
  have_so = 1;
  close(fd);

  rc = run_compiler(c, c_path, so_path, st);
  if (rc != DSK_OK) goto done;
  /* the linker creates its output with 0777 & ~umask; make it private */
  if (chmod(so_path, 0700) != 0) {
    rc = dsk_status_set(st, DSK_E_JIT, "cannot chmod '%s': %s", so_path, errtext(errno));
    goto done;
  }
  if (rename(so_path, final_path) != 0) {
    rc = dsk_status_set(st, DSK_E_JIT, "cannot rename '%s' to '%s': %s", so_path, final_path,
                        errtext(errno));
    goto done;
  }
  have_so = 0;
done:
  if (have_c) unlink(c_path);
  if (have_so) unlink(so_path);
  return rc;
}

/* ---- loading --------------------------------------------------------------- */

/* Checks and dlopens a cache file and validates its table.  *out is set only
   on success. */
static int open_model(const char *path, dsk_model **out, dsk_status *st) {
  struct stat sb;
  if (lstat(path, &sb) != 0)
    return dsk_status_set(st, DSK_E_JIT, "cannot access '%s': %s", path, errtext(errno));
  if (!S_ISREG(sb.st_mode))
    return dsk_status_set(st, DSK_E_JIT, "refusing to load '%s': not a regular file", path);
  int rc = check_owner_mode(path, &sb, "cached model", st);
  if (rc != DSK_OK) return rc;

  dsk_model *m = calloc(1, sizeof *m);
  if (!m) return dsk_status_set(st, DSK_E_NOMEM, "out of memory");
  snprintf(m->path, sizeof m->path, "%s", path);
  m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!m->dl) {
    const char *why = dlerror();
    rc = dsk_status_set(st, DSK_E_JIT, "cannot load '%s': %s (delete the file to rebuild it)",
                        path, why ? why : "unknown dlopen error");
    free(m);
    return rc;
  }
  void *sym = dlsym(m->dl, "dsk_model_table");
  const dsk_gen_table *(*table_fn)(void) = NULL;
  if (sym) memcpy(&table_fn, &sym, sizeof table_fn);
  if (!table_fn) {
    rc = dsk_status_set(st, DSK_E_JIT, "'%s' does not export dsk_model_table", path);
  } else if (!(m->tab = table_fn())) {
    rc = dsk_status_set(st, DSK_E_JIT, "dsk_model_table() of '%s' returned NULL", path);
  } else if (m->tab->abi_version != DSK_GEN_ABI_VERSION) {
    rc = dsk_status_set(st, DSK_E_JIT,
                        "'%s' has model ABI version %d but this kernel expects ABI version %d",
                        path, m->tab->abi_version, DSK_GEN_ABI_VERSION);
  }
  if (rc != DSK_OK) {
    dlclose(m->dl);
    free(m);
    return rc;
  }
  *out = m;
  return DSK_OK;
}

int dsk_jit_open(const char *c_source, const dsk_jit_options *opt, dsk_model **out,
                 dsk_status *st) {
  dsk_status_clear(st);
  if (!out) return dsk_status_set(st, DSK_E_ARG, "dsk_jit_load: out is NULL");
  *out = NULL;
  if (!c_source) return dsk_status_set(st, DSK_E_ARG, "dsk_jit_load: C source is NULL");

  char dir[DSK_PATH_MAX];
  int rc = resolve_cache_dir(opt, dir, st);
  if (rc == DSK_OK) rc = ensure_cache_dir(dir, st);
  if (rc != DSK_OK) return rc;

  cc_cmd cc;
  rc = cc_cmd_init(&cc, opt, st);
  if (rc != DSK_OK) return rc;
  const char *version = NULL;
  rc = cc_version(&cc, &version, st);
  if (rc != DSK_OK) {
    cc_cmd_free(&cc);
    return rc;
  }

  hash128 h = {UINT64_C(14695981039346656037), UINT64_C(14695981039346656037) ^
                                                   UINT64_C(0x9e3779b97f4a7c15)};
  hash_field(&h, c_source);
  hash_toolchain(&h, &cc, version);
  char key[33];
  snprintf(key, sizeof key, "%016llx%016llx", (unsigned long long)h.a, (unsigned long long)h.b);

  char final_path[DSK_PATH_MAX];
  int plen = snprintf(final_path, sizeof final_path, "%s/%s.so", dir, key);
  if (plen < 0 || (size_t)plen >= sizeof final_path) {
    cc_cmd_free(&cc);
    return dsk_status_set(st, DSK_E_JIT, "cache directory path too long: %s", dir);
  }
  struct stat sb;
  if (lstat(final_path, &sb) != 0) {
    if (errno != ENOENT)
      rc = dsk_status_set(st, DSK_E_JIT, "cannot access '%s': %s", final_path, errtext(errno));
    else
      rc = compile_to_cache(&cc, dir, key, c_source, final_path, st);
  }
  cc_cmd_free(&cc);
  if (rc != DSK_OK) return rc;
  return open_model(final_path, out, st);
}

/* C text alone says nothing about sparsity: the Jacobian pattern is dense. */
int dsk_jit_load(const char *c_source, const dsk_jit_options *opt, dsk_model **out,
                 dsk_status *st) {
  int rc = dsk_jit_open(c_source, opt, out, st);
  if (rc == DSK_OK) {
    rc = dsk_model_attach_patterns(*out, NULL, NULL, st);
    if (rc != DSK_OK) {
      dsk_model_free(*out);
      *out = NULL;
    }
  }
  return rc;
}

const dsk_gen_table *dsk_model_table(const dsk_model *m) { return m ? m->tab : NULL; }

const char *dsk_model_path(const dsk_model *m) { return m ? m->path : NULL; }

void dsk_model_free(dsk_model *m) {
  if (!m) return;
  dsk_model_free_patterns(m);
  dsk_model_cb_free(m);
  if (m->dl) dlclose(m->dl);
  free(m);
}

/* ---- source index ---------------------------------------------------------- */

#define INDEX_MAGIC "dsk-index 1\n"

/* The GNU build id of the object that contains this code, as hex (empty when
   there is none): found once, by the PT_LOAD segment holding our address. */
static char build_id[2 * 64 + 1];
static pthread_once_t build_id_once = PTHREAD_ONCE_INIT;

static int build_id_cb(struct dl_phdr_info *info, size_t size, void *data) {
  uintptr_t addr = (uintptr_t)data;
  int ours = 0;
  (void)size;
  for (int i = 0; i < info->dlpi_phnum && !ours; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t lo = (uintptr_t)info->dlpi_addr + (uintptr_t)ph->p_vaddr;
    ours = ph->p_type == PT_LOAD && addr >= lo && addr < lo + (uintptr_t)ph->p_memsz;
  }
  if (!ours) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_NOTE) continue;
    const char *p = (const char *)((uintptr_t)info->dlpi_addr + (uintptr_t)ph->p_vaddr);
    const char *end = p + ph->p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const ElfW(Nhdr) *nh = (const void *)p;
      const char *name = p + sizeof *nh;
      const unsigned char *desc = (const unsigned char *)name + ((nh->n_namesz + 3u) & ~3u);
      if ((const char *)desc + nh->n_descsz > end) break;
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
          nh->n_descsz > 0 && nh->n_descsz <= 64) {
        for (unsigned k = 0; k < nh->n_descsz; k++)
          snprintf(build_id + 2 * k, 3, "%02x", desc[k]);
        return 1;
      }
      p = (const char *)desc + ((nh->n_descsz + 3u) & ~3u);
    }
  }
  return 1; /* our object, without a build id */
}

static void find_build_id(void) {
  dl_iterate_phdr(build_id_cb, (void *)(uintptr_t)&find_build_id);
}

/* <dir>/<key>.idx for this DiffSL text; 0 when the index is off or on error. */
static int index_path(const char *diffsl, const dsk_jit_options *opt, char *path,
                      dsk_status *st) {
  pthread_once(&build_id_once, find_build_id);
  if (!build_id[0]) return 0;
  char dir[DSK_PATH_MAX];
  if (resolve_cache_dir(opt, dir, st) != DSK_OK) return 0;
  cc_cmd cc;
  if (cc_cmd_init(&cc, opt, st) != DSK_OK) return 0;
  const char *version = NULL;
  int rc = cc_version(&cc, &version, st);
  hash128 h = {UINT64_C(0x84222325cbf29ce4), UINT64_C(0x9e3779b97f4a7c15)};
  if (rc == DSK_OK) {
    hash_field(&h, "diffsl");
    hash_field(&h, diffsl);
    hash_toolchain(&h, &cc, version);
    hash_field(&h, build_id);
  }
  cc_cmd_free(&cc);
  if (rc != DSK_OK) return 0;
  int n = snprintf(path, DSK_PATH_MAX, "%s/%016llx%016llx.idx", dir, (unsigned long long)h.a,
                   (unsigned long long)h.b);
  return n > 0 && n < DSK_PATH_MAX;
}

static int read_ints(FILE *f, int *v, size_t n) { return fread(v, sizeof *v, n, f) == n; }

/* A pattern from the entry; 0 when it is absent, truncated or inconsistent. */
static int read_pattern(FILE *f, int n, dsk_sparsity *p) {
  int head[3];
  memset(p, 0, sizeof *p);
  if (!read_ints(f, head, 3)) return 0;
  if (head[0] != n || head[1] != n || head[2] < 0 || (long)head[2] > (long)n * n) return 0;
  p->nrows = head[0], p->ncols = head[1], p->nnz = head[2];
  p->colptr = malloc(((size_t)n + 1) * sizeof(int));
  p->rowidx = malloc(((size_t)p->nnz + 1) * sizeof(int));
  int ok = p->colptr && p->rowidx && read_ints(f, p->colptr, (size_t)n + 1) &&
           read_ints(f, p->rowidx, (size_t)p->nnz) && p->colptr[0] == 0 &&
           p->colptr[n] == p->nnz;
  for (int j = 0; ok && j < n; j++) {
    ok = p->colptr[j] <= p->colptr[j + 1];
    for (int k = p->colptr[j]; ok && k < p->colptr[j + 1]; k++)
      ok = p->rowidx[k] >= 0 && p->rowidx[k] < n && (k == p->colptr[j] || p->rowidx[k - 1] < p->rowidx[k]);
  }
  if (!ok) dsk_sparsity_free(p);
  return ok;
}

int dsk_jit_index_open(const char *diffsl, const dsk_jit_options *opt, dsk_model **out,
                       dsk_status *st) {
  char path[DSK_PATH_MAX], name[64], so[DSK_PATH_MAX];
  dsk_status ignore;
  *out = NULL;
  if (!diffsl || !index_path(diffsl, opt, path, &ignore)) return DSK_OK;
  FILE *f = fopen(path, "rb");
  if (!f) return DSK_OK;
  struct stat sb; /* the same trust as for the objects: ours, not writable by others */
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) ||
      check_owner_mode(path, &sb, "index entry", &ignore) != DSK_OK) {
    fclose(f);
    return DSK_OK;
  }
  char magic[sizeof INDEX_MAGIC];
  int ok = fread(magic, 1, sizeof INDEX_MAGIC - 1, f) == sizeof INDEX_MAGIC - 1 &&
           memcmp(magic, INDEX_MAGIC, sizeof INDEX_MAGIC - 1) == 0 && fgets(name, sizeof name, f);
  size_t len = ok ? strlen(name) : 0;
  ok = ok && len == 36 && name[35] == '\n' && strncmp(name + 32, ".so", 3) == 0;
  for (size_t i = 0; ok && i < 32; i++)
    ok = (name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f');
  dsk_model *m = NULL;
  if (ok) {
    name[35] = '\0';
    char dir[DSK_PATH_MAX];
    ok = resolve_cache_dir(opt, dir, &ignore) == DSK_OK &&
         snprintf(so, sizeof so, "%s/%s", dir, name) < (int)sizeof so;
    ok = ok && access(so, R_OK) == 0 && open_model(so, &m, &ignore) == DSK_OK;
  }
  dsk_sparsity jac, mass;
  int has_mass = 0;
  memset(&jac, 0, sizeof jac), memset(&mass, 0, sizeof mass);
  if (ok) ok = read_pattern(f, m->tab->nstates, &jac) && read_ints(f, &has_mass, 1);
  if (ok && has_mass) ok = read_pattern(f, m->tab->nstates, &mass);
  if (ok) ok = (has_mass != 0) == (m->tab->has_mass != 0) && fgetc(f) == EOF;
  fclose(f);
  if (!ok) { /* a miss: the caller compiles, which rewrites the entry */
    dsk_sparsity_free(&jac), dsk_sparsity_free(&mass);
    if (m) dsk_model_free(m);
    return DSK_OK;
  }
  int rc = dsk_model_attach_patterns(m, &jac, has_mass ? &mass : NULL, st);
  if (rc != DSK_OK) {
    dsk_model_free(m);
    return rc;
  }
  *out = m;
  return DSK_OK;
}

static int write_pattern(FILE *f, const dsk_sparsity *p) {
  int head[3] = {p->nrows, p->ncols, p->nnz};
  return fwrite(head, sizeof(int), 3, f) == 3 &&
         fwrite(p->colptr, sizeof(int), (size_t)p->ncols + 1, f) == (size_t)p->ncols + 1 &&
         fwrite(p->rowidx, sizeof(int), (size_t)p->nnz, f) == (size_t)p->nnz;
}

void dsk_jit_index_store(const char *diffsl, const dsk_jit_options *opt, const dsk_model *m) {
  char path[DSK_PATH_MAX], tmp[DSK_PATH_MAX + 16];
  dsk_status ignore;
  if (!diffsl || !m || !m->jac.colptr || !index_path(diffsl, opt, path, &ignore)) return;
  const char *name = strrchr(m->path, '/');
  name = name ? name + 1 : m->path;
  if (strlen(name) != 35) return; /* <32 hex>.so */
  int n = snprintf(tmp, sizeof tmp, "%s-XXXXXX", path);
  if (n < 0 || (size_t)n >= sizeof tmp) return;
  int fd = mkstemp(tmp);
  if (fd < 0) return;
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    close(fd);
    unlink(tmp);
    return;
  }
  int has_mass = m->mass.colptr != NULL;
  int ok = fputs(INDEX_MAGIC, f) >= 0 && fprintf(f, "%s\n", name) > 0 &&
           write_pattern(f, &m->jac) && fwrite(&has_mass, sizeof has_mass, 1, f) == 1 &&
           (!has_mass || write_pattern(f, &m->mass));
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) unlink(tmp);
}
