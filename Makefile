# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# On Linux the io_uring backend must work: tests fail (never skip) if it cannot be used.
REQUIRE_URING := $(shell [ "$$(uname -s)" = Linux ] && echo 1 || echo 0)

.PHONY: setup sysdeps demo notebook lint cwarn docs test fuzz bench wheel clean

sysdeps:
	@scripts/system-deps.sh --bench

# Rebuilt when the build inputs change (the cffi binding is compiled by `pip install`).
C_SOURCES := $(wildcard lsio/_c/*.c)
C_HEADERS := $(wildcard lsio/_c/*.h)

$(VENV)/.installed: pyproject.toml setup.py lsio/_uring_build.py lsio/_codec_build.py \
		lsio/_cbuild.py $(C_SOURCES) $(C_HEADERS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e ".[test,bench]"
	@touch $@

setup: sysdeps $(VENV)/.installed

demo: setup
	$(PY) -m lsio demo

# Open the example notebook in JupyterLab (installed into .venv on first use).
notebook: setup
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install -q jupyterlab
	$(VENV)/bin/jupyter lab docs/example.ipynb

# ruff and mypy --strict over the package (config in pyproject.toml); part of `make test`.
lint: setup
	$(PY) -m ruff check lsio tests benchmarks
	$(PY) -m mypy

# lsio's own C must compile without a warning (-Wall -Wextra, as the build uses): part of
# `make test`. System headers (liburing, blosc, zstd) are exempt as system headers.
cwarn: sysdeps
	@for f in $(C_SOURCES); do gcc -fsyntax-only -std=gnu11 -Wall -Wextra -Werror -Ilsio/_c $$f || exit 1; done
	@echo "C sources: no warnings"

# The documentation site (mkdocs + mkdocstrings): warnings are errors; part of `make test`.
docs: setup
	$(PY) -m mkdocs build --strict --quiet -d site

# One manylinux wheel for CPython 3.11+ that needs nothing but glibc 2.28 (scripts/build-wheel.sh:
# vendored static C libraries, zig cc, auditwheel); rebuilt when its inputs change.
WHEEL_INPUTS := pyproject.toml setup.py MANIFEST.in scripts/build-wheel.sh scripts/wheel_vendor.py \
	$(wildcard LICENSE licenses/* lsio/*.py lsio/*/*.py lsio/*/*/*.py lsio/py.typed lsio/_c/*)
dist/.wheel-built: $(WHEEL_INPUTS)
	scripts/build-wheel.sh
	@touch $@

wheel: dist/.wheel-built

test: lint cwarn docs wheel
	LSIO_REQUIRE_URING=$${LSIO_REQUIRE_URING-$(REQUIRE_URING)} $(PY) -m pytest -q -p no:cacheprovider

# The fuzz suite (tests marked `fuzz`: parsers of untrusted bytes) at random, FUZZ_SCALE times
# the examples `make test` runs derandomized. Turn each failure it finds into an @example.
FUZZ_SCALE ?= 50
fuzz: setup
	LSIO_HYPOTHESIS_PROFILE=fuzz LSIO_FUZZ_SCALE=$(FUZZ_SCALE) $(PY) -m pytest -q -p no:cacheprovider -m fuzz

bench: setup
	$(PY) -m benchmarks.bench_fixed --out docs/benchmarks.md --json docs/bench_fixed.json
	$(PY) -m benchmarks.bench_local --out docs/benchmarks.md --json docs/bench_local.json
	$(PY) -m benchmarks.bench_http --out docs/benchmarks.md --json docs/bench_http.json
	$(PY) -m benchmarks.bench_zarr --out docs/benchmarks.md --json docs/bench_zarr.json
	$(PY) -m benchmarks.bench_dask --out docs/benchmarks.md --json docs/bench_dask.json
	$(PY) -m benchmarks.bench_remote --out docs/benchmarks.md --json docs/bench_remote.json
	$(PY) -m benchmarks.bench_stall --size-mib 1024 --samples 9 --state cold --json docs/bench_stall.json
	$(PY) -m benchmarks.plots docs/bench_fixed.json docs/bench_local.json docs/bench_http.json \
		docs/bench_zarr.json docs/bench_dask.json docs/bench_remote.json

clean:
	rm -rf $(VENV) build dist site *.egg-info lsio/_uring*.so lsio/_uring.c lsio/_codecs*.so lsio/_codecs.c lsio/*.o
