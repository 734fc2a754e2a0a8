# On a fresh machine: `make demo` (lsio alone, in its own venv, no root needed) and `make test`
# (the whole developer toolchain: system packages, test and bench extras).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# On Linux the io_uring backend must work: tests fail (never skip) if it cannot be used.
REQUIRE_URING := $(shell [ "$$(uname -s)" = Linux ] && echo 1 || echo 0)

.PHONY: setup sysdeps demo readme-figures notebook lint cwarn docs test fuzz bench clean

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

# The demo installs lsio alone (`pip install .` with the zarr extra the demo shows) into its own
# venv, as any user may: no system packages, no root, no test or bench tools. Without liburing's
# headers the build is the thread backend; it says so, and how to get io_uring. The venv is
# rebuilt when the build inputs change or the headers appear (the stamp names the backend).
DEMO_VENV := .venv-demo
DEMO_PY := $(DEMO_VENV)/bin/python
DEMO_BACKEND := $(if $(wildcard /usr/include/liburing.h),uring,threads)
URING_HINT := liburing's headers are missing, so lsio builds its thread backend. For io_uring: \
	sudo apt-get install liburing-dev (Debian/Ubuntu; liburing-devel on Fedora/RHEL), then \
	make demo again; or install the wheel that make wheel builds, which needs nothing.

$(DEMO_VENV)/.installed-$(DEMO_BACKEND): pyproject.toml setup.py lsio/_uring_build.py \
		lsio/_codec_build.py lsio/_cbuild.py $(C_SOURCES) $(C_HEADERS)
	@[ "$$(uname -s)" != Linux ] || [ $(DEMO_BACKEND) = uring ] || echo "lsio demo: $(URING_HINT)"
	rm -rf $(DEMO_VENV)
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_PY) -m pip install -q ".[zarr]"
	@touch $@

demo: $(DEMO_VENV)/.installed-$(DEMO_BACKEND)
	@[ "$$(uname -s)" != Linux ] || [ $(DEMO_BACKEND) = uring ] || echo "lsio demo: $(URING_HINT)"
	cd /tmp && $(abspath $(DEMO_PY)) -m lsio demo

# The README's demo figures (between <!-- figures:start --> and <!-- figures:end -->) are the
# output of a fresh demo run, written by scripts/readme_figures.py; never edited by hand.
readme-figures: $(DEMO_VENV)/.installed-$(DEMO_BACKEND)
	cd /tmp && $(abspath $(DEMO_PY)) -m lsio demo | tee $(CURDIR)/.demo-output.txt
	$(DEMO_PY) scripts/readme_figures.py README.md .demo-output.txt
	@rm -f .demo-output.txt

# Open the example notebook in JupyterLab (the `notebook` extra: jupyterlab, ipywidgets for the
# progress widget, matplotlib for its plot; installed into .venv on first use).
notebook: setup
	@$(PY) -c "import jupyterlab, ipywidgets, matplotlib" 2>/dev/null || \
		$(PY) -m pip install -q -e ".[notebook]"
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

test: lint cwarn docs
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
	rm -rf $(VENV) $(DEMO_VENV) build site *.egg-info lsio/_uring*.so lsio/_uring.c lsio/_codecs*.so lsio/_codecs.c lsio/*.o
