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
void suite_forward(void);
void suite_callback(void);

static const struct {
  const char *name;
  void (*run)(void);
} suites[] = {
    {"lex", suite_lex},   {"parse", suite_parse}, {"sema", suite_sema},
    {"emit", suite_emit}, {"jit", suite_jit},     {"solver", suite_solver},   {"linsol", suite_linsol},
    {"corpus", suite_corpus},
    {"adjoint", suite_adjoint},
    {"forward", suite_forward},
    {"callback", suite_callback},
};

/* ./dsk_tests [SUITE...]: every suite, or only those named */
int main(int argc, char **argv) {
  for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
    int f0 = dsk_test_failed, want = argc < 2;
    for (int a = 1; a < argc; a++) want |= strcmp(argv[a], suites[i].name) == 0;
    if (!want) continue;
    suites[i].run();
    printf("suite %-8s %s\n", suites[i].name, dsk_test_failed == f0 ? "ok" : "FAILED");
  }
  printf("%d passed, %d failed\n", dsk_test_passed, dsk_test_failed);
  return dsk_test_failed ? 1 : 0;
}
