# On a fresh machine: `make demo` (lsio alone, in its own venv, no root needed) and `make test`
# (the whole developer toolchain: system packages, test and bench extras).
SHELL := /bin/bash
# The developers' venv runs the newest Python this machine has and the newest zarr; a second
# venv on the oldest supported Python keeps zarr 3.1 (the last zarr for 3.11) working.
# The demo's venv uses the `python3` a user has (3.11 or newer).
PYTHON ?= python3
PY_NEW ?= 3.13
PY_OLD ?= 3.11
VENV := .venv
VENV_OLD := .venv-py$(PY_OLD)
PY := $(VENV)/bin/python
PY_OLD_BIN := $(VENV_OLD)/bin/python
# On Linux the io_uring backend must work: tests fail (never skip) if it cannot be used.
REQUIRE_URING := $(shell [ "$$(uname -s)" = Linux ] && echo 1 || echo 0)

.PHONY: setup sysdeps demo readme-figures notebook lint cwarn docs test smoke-old fuzz bench wheel clean

sysdeps:
	@scripts/system-deps.sh --bench

# Rebuilt when the build inputs change (the cffi binding is compiled by `pip install`).
C_SOURCES := $(wildcard lsio/_c/*.c)
C_HEADERS := $(wildcard lsio/_c/*.h)
BUILD_INPUTS := pyproject.toml setup.py lsio/_uring_build.py lsio/_codec_build.py lsio/_curl_build.py \
	lsio/_cbuild.py lsio/_probe_build.py $(C_SOURCES) $(C_HEADERS)

# scripts/python.sh finds the interpreter (or fails, naming the missing version).
$(VENV)/.installed-$(PY_NEW): $(BUILD_INPUTS)
	py=$$(scripts/python.sh $(PY_NEW)) && $$py -m venv --clear $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e ".[test,bench,interop]"
	@touch $@

# The oldest Python with the oldest zarr lsio supports: the zarr smoke below runs here.
$(VENV_OLD)/.installed: $(BUILD_INPUTS)
	py=$$(scripts/python.sh $(PY_OLD)) && $$py -m venv --clear $(VENV_OLD)
	$(PY_OLD_BIN) -m pip install -q -U pip
	$(PY_OLD_BIN) -m pip install -q -e ".[test]" "zarr==3.1.*"
	@touch $@

setup: sysdeps $(VENV)/.installed-$(PY_NEW)

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

$(DEMO_VENV)/.installed-$(DEMO_BACKEND): $(BUILD_INPUTS)
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

# One manylinux wheel for CPython 3.11+ that needs nothing but glibc 2.28 (scripts/build-wheel.sh:
# vendored static C libraries, zig cc, auditwheel); rebuilt when its inputs change.
WHEEL_INPUTS := pyproject.toml setup.py MANIFEST.in scripts/build-wheel.sh scripts/wheel_vendor.py \
	$(wildcard LICENSE licenses/* lsio/*.py lsio/*/*.py lsio/*/*/*.py lsio/py.typed lsio/_c/*)
dist/.wheel-built: $(WHEEL_INPUTS)
	scripts/build-wheel.sh
	@touch $@

wheel: dist/.wheel-built

# zarr releases between the oldest and the newest, for tests/test_zarr_compat.py (pure Python:
# installed beside the venv with --target, no dependencies).
ZARR_BETWEEN := 3.2.1 3.3.0
ZARR_DIRS := $(ZARR_BETWEEN:%=build/zarr/%)
space := $(empty) $(empty)
build/zarr/%: | $(VENV)/.installed-$(PY_NEW)
	$(PY) -m pip install -q --no-deps --target $@ zarr==$*

# The whole suite on the newest Python and zarr, then the zarr smoke on the oldest.
test: lint cwarn docs wheel $(ZARR_DIRS)
	LSIO_ZARR_DIRS=$(subst $(space),:,$(ZARR_DIRS)) \
	LSIO_REQUIRE_URING=$${LSIO_REQUIRE_URING-$(REQUIRE_URING)} $(PY) -m pytest -q -p no:cacheprovider
	$(MAKE) --no-print-directory smoke-old

# The store (zarr's StoreTests), the codec pipeline and the fast path on Python $(PY_OLD) with
# zarr 3.1: the versions the compatibility layer must keep working.
SMOKE_OLD := tests/test_zarr.py tests/test_zarr_pipeline.py tests/test_zarr_compat.py
smoke-old: sysdeps $(VENV_OLD)/.installed
	$(PY_OLD_BIN) -c "import sys, zarr; print('smoke: Python', sys.version.split()[0], 'zarr', zarr.__version__)"
	LSIO_REQUIRE_URING=$${LSIO_REQUIRE_URING-$(REQUIRE_URING)} $(PY_OLD_BIN) -m pytest -q -p no:cacheprovider $(SMOKE_OLD)

# The fuzz suite (tests marked `fuzz`: parsers of untrusted bytes) at random, FUZZ_SCALE times
# the examples `make test` runs derandomized. Turn each failure it finds into an @example.
FUZZ_SCALE ?= 50
fuzz: setup
	LSIO_HYPOTHESIS_PROFILE=fuzz LSIO_FUZZ_SCALE=$(FUZZ_SCALE) $(PY) -m pytest -q -p no:cacheprovider -m fuzz

# On the developers' venv: the newest Python and zarr (each benchmark also records them).
bench: setup
	$(PY) -c "import sys, zarr; print('bench: Python', sys.version.split()[0], 'zarr', zarr.__version__)"
	$(PY) -m benchmarks.bench_fixed --out docs/benchmarks.md --json docs/bench_fixed.json
	$(PY) -m benchmarks.bench_local --out docs/benchmarks.md --json docs/bench_local.json
	$(PY) -m benchmarks.bench_http --out docs/benchmarks.md --json docs/bench_http.json
	$(PY) -m benchmarks.bench_transport --out docs/benchmarks.md --json docs/bench_transport.json
	$(PY) -m benchmarks.bench_zarr --out docs/benchmarks.md --json docs/bench_zarr.json
	$(PY) -m benchmarks.bench_dask --out docs/benchmarks.md --json docs/bench_dask.json
	$(PY) -m benchmarks.bench_remote --skip moto:sparse --out docs/benchmarks.md --json docs/bench_remote.json
	$(PY) -m benchmarks.bench_interop --out docs/benchmarks.md --json docs/bench_interop.json
	$(PY) -m benchmarks.bench_virtual --out docs/benchmarks.md --json docs/bench_virtual.json
	$(PY) -m benchmarks.bench_stall --size-mib 1024 --samples 9 --state cold --json docs/bench_stall.json
	$(PY) -m benchmarks.bench_grib --out docs/benchmarks.md --json docs/bench_grib.json
	$(PY) -m benchmarks.plots docs/bench_fixed.json docs/bench_local.json docs/bench_http.json \
		docs/bench_zarr.json docs/bench_dask.json docs/bench_remote.json

clean:
	rm -rf $(VENV) $(VENV_OLD) $(DEMO_VENV) build dist site *.egg-info lsio/_uring*.so lsio/_uring.c \
		lsio/_codecs*.so lsio/_codecs.c lsio/*.o lsio/_build.json
