#!/usr/bin/env bash
# scripts/asan_run.sh PROGRAM [ARGS...] - run a program built with ASan and UBSan
# (make test-asan): any report fails the run.  LeakSanitizer needs ptrace; where the
# machine forbids it (some containers, or a program run under strace/gdb) LSan stops
# with a fatal error that is about the machine, not the program: then the program runs
# again without leak checking, with a warning (make memcheck checks leaks with valgrind).
set -u
opts="halt_on_error=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
ASAN_OPTIONS="detect_leaks=1:$opts" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] && grep -q "LeakSanitizer has encountered a fatal error\|LeakSanitizer does not work under ptrace" "$log"; then
  echo "WARNING: LeakSanitizer cannot run on this machine (it needs ptrace): running $1 again without leak checking; make memcheck checks leaks with valgrind" >&2
  ASAN_OPTIONS="detect_leaks=0:$opts" "$@"
  rc=$?
fi
exit "$rc"
