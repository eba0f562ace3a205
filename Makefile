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

.PHONY: venv system-deps demo test bench clean

venv: $(STAMP)

# Torch first (a CPU build by default): an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,deploy]'
	touch $(STAMP)

# DICOM validators, a real PACS and headless Chromium (HTML report) for the tests; skipped quietly where apt is unavailable.
system-deps:
	@if command -v dciodvfy >/dev/null && command -v dcmdump >/dev/null && test -x /usr/sbin/Orthanc && command -v chromium >/dev/null; then \
	  echo "system packages present"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null) \
	    || echo "warning: apt install failed; tests needing $(APT_PACKAGES) will skip"; \
	else echo "note: not root or no apt: tests needing $(APT_PACKAGES) will skip"; fi

demo: venv
	$(PY) -m monai_fracture.demo --out $(DEMO_DIR) $(DEMO_ARGS)

test: venv system-deps
	$(PY) -m pytest -q -p no:cacheprovider

bench: venv
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
