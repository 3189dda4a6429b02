/*
 * runner.h - the kernel's C test runner: tiny assertion macros.
 * A failing CHECK prints the file, line and expression and counts a failure;
 * each suite is a function `void suite_NAME(void)` listed in main.c.
 */
#ifndef DSK_TEST_RUNNER_H
#define DSK_TEST_RUNNER_H
#include <math.h>
#include <stdio.h>
#include <string.h>

extern int dsk_test_passed, dsk_test_failed;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (cond) {                                                                 \
      dsk_test_passed++;                                                        \
    } else {                                                                    \
      dsk_test_failed++;                                                        \
      printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                    \
    }                                                                           \
  } while (0)

#define CHECK_MSG(cond, ...)                                                    \
  do {                                                                          \
    if (cond) {                                                                 \
      dsk_test_passed++;                                                        \
    } else {                                                                    \
      dsk_test_failed++;                                                        \
      printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
      printf(__VA_ARGS__);                                                      \
      printf("\n");                                                             \
    }                                                                           \
  } while (0)

#define CHECK_CLOSE(a, b, rtol)                                                 \
  CHECK_MSG(fabs((a) - (b)) <= (rtol) * fabs(b) + 1e-300, "%.17g vs %.17g",    \
            (double)(a), (double)(b))

#define CHECK_CONTAINS(hay, needle)                                             \
  CHECK_MSG(strstr((hay), (needle)) != NULL, "'%s' not in '%s'", (needle), (hay))

#endif
