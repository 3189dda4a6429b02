#!/usr/bin/env python3
"""One entry point for validating diffsol-pytorch.

    python scripts/run_validation.py [--perf] [--benchmark-json PATH]

Stages, in order: the C kernel's tests; the Python unit, integration and gradient
tests (everything not marked memory or perf, notebooks included); the memory tests
(resident-memory drift over thousands of solve + gradient cycles); the C tests under
valgrind (no definite leaks, no invalid accesses); with --perf, the benchmark suite
(pytest -m perf --run-perf, pytest-benchmark JSON to --benchmark-json). Every stage
runs even when an earlier one failed; a summary table ends the run and the exit code
is 0 only when every stage passed.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def stages(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    py = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    out = [
        ("C kernel tests", ["make", "--no-print-directory", "test-c"]),
        ("Python unit / integration / gradient", py + ["-m", "not memory and not perf"]),
        ("memory drift (Python)", py + ["-m", "memory"]),
        ("C tests under valgrind", ["make", "--no-print-directory", "memcheck"]),
    ]
    if args.perf:
        bench = py + ["-m", "perf", "--run-perf"]
        if args.benchmark_json:
            bench.append(f"--benchmark-json={args.benchmark_json}")
        out.append(("benchmarks (perf)", bench))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perf", action="store_true", help="also run the benchmark suite")
    ap.add_argument("--benchmark-json", metavar="PATH", help="pytest-benchmark JSON output")
    args = ap.parse_args()
    results = []
    for name, cmd in stages(args):
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        status = "passed" if rc == 0 else ("no tests" if rc == 5 else f"FAILED ({rc})")
        results.append((name, status, time.perf_counter() - t0))
    width = max(len(n) for n, _, _ in results)
    print("\n" + "stage".ljust(width) + "  status        seconds")
    for name, status, secs in results:
        print(f"{name.ljust(width)}  {status:<12}  {secs:7.1f}")
    failed = [n for n, s, _ in results if s.startswith("FAILED")]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
