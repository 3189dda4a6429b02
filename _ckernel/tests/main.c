/* main.c - runs every C test suite of the kernel; prints "N passed, N failed". */
#include <stdio.h>
#include <string.h>
#include "runner.h"

int dsk_test_passed = 0, dsk_test_failed = 0;

void suite_lex(void);
void suite_parse(void);
void suite_sema(void);
void suite_emit(void);
void suite_jit(void);
void suite_solver(void);
void suite_linsol(void);
void suite_corpus(void);
void suite_adjoint(void);
void suite_discrete(void);
void suite_forward(void);
void suite_batch(void);
void suite_callback(void);

static const struct {
  const char *name;
  void (*run)(void);
} suites[] = {
    {"lex", suite_lex},   {"parse", suite_parse}, {"sema", suite_sema},
    {"emit", suite_emit}, {"jit", suite_jit},     {"solver", suite_solver},   {"linsol", suite_linsol},
    {"corpus", suite_corpus},
    {"adjoint", suite_adjoint},
    {"discrete", suite_discrete},
    {"forward", suite_forward},
    {"batch", suite_batch},
    {"callback", suite_callback},
};

/* dsk_tests [SUITE...]: every suite, or only the ones named */
static int selected(const char *name, int argc, char **argv) {
  if (argc < 2) return 1;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

int main(int argc, char **argv) {
  for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
    if (!selected(suites[i].name, argc, argv)) continue;
    int f0 = dsk_test_failed;
    suites[i].run();
    printf("suite %-8s %s\n", suites[i].name, dsk_test_failed == f0 ? "ok" : "FAILED");
  }
  printf("%d passed, %d failed\n", dsk_test_passed, dsk_test_failed);
  return dsk_test_failed ? 1 : 0;
}
