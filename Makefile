# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.kirchnet-installed

.PHONY: demo test bench clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dist,test]"
	@# optional fast backends (CHOLMOD needs libsuitesparse-dev); kirchnet works without them
	$(PIP) install -q -e ".[fast,dist,test]" || echo "WARNING: optional fast solver backends not installed; using scipy fallbacks"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m kirchnet reproduce --quick

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout=1800 tests

bench: $(STAMP)
	cd benchmarks && for b in bench_core bench_rules bench_baselines bench_scaling bench_spice; do \
		../$(PY) $$b.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
