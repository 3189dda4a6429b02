# diffsol-pytorch: set-up, demo and tests on a fresh Debian machine.
#   make setup     Debian packages (if missing), .venv, torch, build deps, an optimised
#                  SUNDIALS (scripts/build_sundials.sh; SUNDIALS=system skips it), editable install
#   make demo      solve the Robertson model and write demo.png
#   make test      C test runner, then the Python test suite
#   make memcheck  the C test runner and the C stress harness under valgrind
#   make test-asan the C test runner and the C stress harness built with AddressSanitizer and
#                  UndefinedBehaviorSanitizer (part of make test)
#   make docs      the Sphinx documentation (HTML in build/docs/html; warnings are errors)
# Every step is idempotent; stamp files under .venv record what is done.

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# meson-python and meson look for meson and ninja on PATH; CYTHON makes meson
# record an absolute cython, so the editable install can rebuild on import
# from a plain `.venv/bin/python` whatever PATH is
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export CYTHON := $(CURDIR)/$(VENV)/bin/cython

DEB_PACKAGES := libsundials-dev libopenblas-dev libsuitesparse-dev pkg-config curl xz-utils
BUILD_DEPS := meson-python meson ninja cmake 'Cython>=3' numpy
CTEST_DIR := build/ctest
DSK_TESTS := $(CTEST_DIR)/dsk_tests
DSK_STRESS := $(CTEST_DIR)/dsk_stress
# the same two programs with AddressSanitizer (+ LeakSanitizer) and UBSan, in their own build dir
ASAN_DIR := build/asan
ASAN_STRESS_ITERATIONS ?= 3
# iterations of the stress harness under valgrind (about 8 s of CPU each there)
STRESS_ITERATIONS ?= 10
VALGRIND := valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
  --child-silent-after-fork=yes

STAMP_TORCH := $(VENV)/.stamp-torch
STAMP_BUILD := $(VENV)/.stamp-build-deps
STAMP_PROJECT := $(VENV)/.stamp-project
STAMP_DOCS := $(VENV)/.stamp-docs

# SUNDIALS=optimised (default): Debian's SUNDIALS 6.4.1 source rebuilt with -O2 into
# $(SUNDIALS_OPT) and linked statically (Debian's own build has no -O2: see
# scripts/build_sundials.sh); SUNDIALS=system: Debian's shared libsundials-dev.
# If the optimised build fails (no network, say), set-up warns and uses the system one.
# $(SUNDIALS_PREFIX_FILE) holds the prefix in use (empty: the system libraries).
SUNDIALS ?= optimised
SUNDIALS_OPT := $(CURDIR)/$(VENV)/opt/sundials-6.4.1
SUNDIALS_PREFIX_FILE := $(VENV)/.sundials-prefix
SUNDIALS_PREFIX = $$(cat $(SUNDIALS_PREFIX_FILE))
STAMP_SUNDIALS := $(VENV)/.stamp-sundials-$(SUNDIALS)
DOCS_OUT := build/docs

# apt-get as root, or through sudo otherwise
define apt_install
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $(1)
endef

.PHONY: setup system-deps check-sources demo docs test test-c test-asan test-py memcheck clean distclean

setup: system-deps $(STAMP_PROJECT)

system-deps:
	@if ! command -v dpkg >/dev/null 2>&1; then \
	  echo "dpkg not found: install $(DEB_PACKAGES) (or their equivalents) yourself"; exit 0; \
	fi; \
	missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(call apt_install,$$missing); \
	fi

# a Debian system python3 needs python3-venv for this
$(PY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); $(call apt_install,python3-venv) && $(PYTHON) -m venv $(VENV); }

$(STAMP_TORCH): constraints.txt | $(PY)
	$(PIP) install -c constraints.txt torch==2.13.0
	touch $@

$(STAMP_BUILD): constraints.txt $(STAMP_TORCH)
	$(PIP) install -c constraints.txt $(BUILD_DEPS)
	touch $@

# one stamp per choice: `make SUNDIALS=system` after a default set-up switches (and back)
$(STAMP_SUNDIALS): scripts/build_sundials.sh $(STAMP_BUILD)
	@if [ "$(SUNDIALS)" = system ]; then \
	  prefix=; \
	elif scripts/build_sundials.sh $(SUNDIALS_OPT); then \
	  prefix=$(SUNDIALS_OPT); \
	else \
	  echo "WARNING: the optimised SUNDIALS build failed; using Debian's libsundials-dev, which is compiled without optimisation (solves about 2x slower); rm $@ and run make setup to try again"; \
	  prefix=; \
	fi; \
	echo "$$prefix" > $(SUNDIALS_PREFIX_FILE)
	rm -f $(VENV)/.stamp-sundials-*
	touch $@

$(STAMP_PROJECT): pyproject.toml meson.build meson_options.txt constraints.txt Makefile $(STAMP_BUILD) $(STAMP_SUNDIALS)
	$(PIP) install -c constraints.txt --no-build-isolation -e '.[test]' \
	  -Csetup-args=-Dsundials_prefix=$(SUNDIALS_PREFIX)
	touch $@

# the docs extra (sphinx, myst-parser); autodoc imports the installed package
$(STAMP_DOCS): pyproject.toml constraints.txt $(STAMP_PROJECT)
	$(PIP) install -c constraints.txt --no-build-isolation -e '.[docs]'
	touch $@

docs: setup $(STAMP_DOCS)
	$(PY) -m sphinx -b html -W --keep-going -n -d $(DOCS_OUT)/doctrees docs $(DOCS_OUT)/html
	@echo "documentation: $(DOCS_OUT)/html/index.html"

demo: setup
	$(PY) -m diffsol_pytorch solve examples/models/robertson_ode.ds \
	  --params 0.04,1e4,3e7 --times logspace:-5:5:11 --rtol 1e-8 --atol 1e-10 --grad 2 --plot demo.png

# The kernel's C tests, in a build directory of their own (debug, for valgrind)
$(CTEST_DIR)/build.ninja: $(STAMP_SUNDIALS) | $(STAMP_BUILD)
	$(VENV)/bin/meson setup $$([ -f $(CTEST_DIR)/meson-private/coredata.dat ] && echo --wipe) \
	  $(CTEST_DIR) --buildtype=debug -Dsundials_prefix=$(SUNDIALS_PREFIX)

$(DSK_TESTS): $(CTEST_DIR)/build.ninja FORCE
	$(VENV)/bin/meson compile -C $(CTEST_DIR) dsk_tests

# _ckernel/tests/stress.c: compile, solve in every mode, error paths, free; many times
$(DSK_STRESS): $(CTEST_DIR)/build.ninja FORCE
	$(VENV)/bin/ninja -C $(CTEST_DIR) build.ninja >/dev/null  # a build dir set up before dsk_stress existed
	$(VENV)/bin/meson compile -C $(CTEST_DIR) dsk_stress

# meson cannot glob: fail early when a kernel or test .c file is not listed
check-sources:
	@for f in _ckernel/*.c _ckernel/tests/*.c; do \
	  grep -q "'$$f'" meson.build || { echo "meson.build does not list $$f: add it"; exit 1; }; \
	done

test-c: system-deps check-sources $(DSK_TESTS)
	./$(DSK_TESTS)

test-py: setup
	DIFFSOL_EXPECT_SUNDIALS_PREFIX=$(SUNDIALS_PREFIX) $(PY) -m pytest

test: setup
	$(MAKE) --no-print-directory test-c
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory test-py

# ASan/UBSan catch what valgrind cannot see (stack and global overflows, undefined
# arithmetic) and run 10x faster; a report fails the run (halt_on_error; options and the
# fallback where LeakSanitizer cannot run: scripts/asan_run.sh)
$(ASAN_DIR)/build.ninja: $(STAMP_SUNDIALS) | $(STAMP_BUILD)
	$(VENV)/bin/meson setup $$([ -f $(ASAN_DIR)/meson-private/coredata.dat ] && echo --wipe) \
	  $(ASAN_DIR) --buildtype=debug -Db_sanitize=address,undefined -Dsundials_prefix=$(SUNDIALS_PREFIX)

test-asan: system-deps check-sources $(ASAN_DIR)/build.ninja
	$(VENV)/bin/ninja -C $(ASAN_DIR) build.ninja >/dev/null
	$(VENV)/bin/meson compile -C $(ASAN_DIR) dsk_tests dsk_stress
	scripts/asan_run.sh ./$(ASAN_DIR)/dsk_tests
	scripts/asan_run.sh ./$(ASAN_DIR)/dsk_stress $(ASAN_STRESS_ITERATIONS)

memcheck: system-deps check-sources $(DSK_TESTS) $(DSK_STRESS)
	@command -v valgrind >/dev/null 2>&1 || { $(call apt_install,valgrind); }
	$(VALGRIND) ./$(DSK_TESTS)
	$(VALGRIND) ./$(DSK_STRESS) $(STRESS_ITERATIONS)

# build/ holds the editable install's build tree too: forget that install
clean:
	rm -rf build dist demo.png .pytest_cache $(STAMP_PROJECT)
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

FORCE:

# libFuzzer run of the DiffSL compiler (clang, ASan + UBSan) for FUZZ_SECONDS;
# new inputs go to build/fuzz/corpus, crashes to build/fuzz/artifacts/
# (docs/testing.md: how to keep some in _ckernel/tests/corpus/fuzz)
FUZZ_SECONDS ?= 60
FUZZ_DIR := build/fuzz
FUZZ_BIN := $(FUZZ_DIR)/fuzz_translate
FUZZ_SEEDS := _ckernel/tests/corpus
FUZZ_KERNEL := $(addprefix _ckernel/,error.c lex.c parse.c sema.c diff.c emit_c.c compile.c)

# libFuzzer run of the whole kernel for FUZZ_SECONDS (_ckernel/tests/fuzz_solve.c): each
# input that translates is compiled by cc and solved in every mode, with ASan + UBSan on
# the kernel, linked against the SUNDIALS of the set-up; seeds: the good corpus and the
# example models; crashes to build/fuzz/artifacts/solve-*
FUZZ_SOLVE_BIN := $(FUZZ_DIR)/fuzz_solve
SUNDIALS_LIBS := cvodes idas arkode nvecserial sunmatrixdense sunlinsoldense sunmatrixsparse \
  sunlinsolspgmr sunlinsolklu

.PHONY: fuzz fuzz-solve
fuzz-solve: system-deps $(STAMP_SUNDIALS)
	@command -v clang >/dev/null 2>&1 || { $(call apt_install,clang); }
	mkdir -p $(FUZZ_DIR)/solve-corpus $(FUZZ_DIR)/artifacts $(FUZZ_DIR)/solve-cache
	prefix=$(SUNDIALS_PREFIX); \
	if [ -n "$$prefix" ]; then inc="-I$$prefix/include"; libs="$(addprefix $$prefix/lib/libsundials_,$(addsuffix .a,$(SUNDIALS_LIBS)))"; \
	else inc=; libs="$(addprefix -lsundials_,$(SUNDIALS_LIBS))"; fi; \
	clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -I_ckernel $$inc -I/usr/include/suitesparse _ckernel/tests/fuzz_solve.c \
	  $$(ls _ckernel/*.c) $$libs -lklu -lopenblas -ldl -lpthread -lm -o $(FUZZ_SOLVE_BIN)
	$(FUZZ_SOLVE_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=512 -timeout=60 -rss_limit_mb=4096 \
	  -dict=_ckernel/tests/fuzz.dict -artifact_prefix=$(FUZZ_DIR)/artifacts/solve- \
	  $(FUZZ_DIR)/solve-corpus $(FUZZ_SEEDS)/good examples/models

fuzz:
	@command -v clang >/dev/null 2>&1 || { $(call apt_install,clang); }
	mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/artifacts
	clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -I_ckernel _ckernel/tests/fuzz_translate.c $(FUZZ_KERNEL) -lm -o $(FUZZ_BIN)
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=512 -timeout=10 -rss_limit_mb=2048 \
	  -dict=_ckernel/tests/fuzz.dict -artifact_prefix=$(FUZZ_DIR)/artifacts/ \
	  $(FUZZ_DIR)/corpus $(FUZZ_SEEDS)/good $(FUZZ_SEEDS)/bad $(FUZZ_SEEDS)/fuzz
