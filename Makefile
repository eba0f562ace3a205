# Two commands set everything up: `make demo` and `make test` (both create .venv themselves).
# GPU users: make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
APT_PACKAGES ?= dcmtk dicom3tools orthanc orthanc-dicomweb chromium openssl
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: venv system-deps demo test bench mutate clean clean-bench

venv: $(STAMP)

# Torch first (a CPU build by default): an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,deploy,ray]'
	touch $(STAMP)

# DICOM validators, a real PACS and headless Chromium (HTML report) for the tests. Where apt cannot install
# them, the tests that need them skip on a developer machine; under CI=true this step fails (as would those tests).
system-deps:
	@if command -v dciodvfy >/dev/null && command -v dcmdump >/dev/null && test -x /usr/sbin/Orthanc && command -v chromium >/dev/null && command -v openssl >/dev/null; then \
	  echo "system packages present"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; then \
	  echo "installed $(APT_PACKAGES)"; \
	else case "$${CI:-}" in \
	  ""|0|false|False|FALSE|no) echo "warning: cannot install $(APT_PACKAGES) (apt-get failed or not root): tests needing them will skip" >&2;; \
	  *) echo "error: CI=true and $(APT_PACKAGES) could not be installed (apt-get failed or not root)" >&2; exit 1;; \
	esac; fi

demo: venv
	$(PY) -m monai_fracture.demo --out $(DEMO_DIR) $(DEMO_ARGS)

test: venv system-deps
	$(PY) -m pytest -q -p no:cacheprovider

bench: venv
	$(PY) -m benchmarks.run $(BENCH_ARGS)

# Mutation testing of the LUT chain, leakage, journal, threshold and UID code (docs/testing.md).
mutate: venv
	$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -q -e '.[mutate]'
	nice -n 5 $(PY) tools/mutate.py $(MUTATE_ARGS)

clean: clean-bench
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache mutants

# Generated benchmark inputs (reused between bench runs; about 25 GB after a full `make bench`).
clean-bench:
	rm -rf benchmarks/out/data
