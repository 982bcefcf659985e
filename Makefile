# The README's two commands: `make audit` and `make test`. Both build the venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := sample_data/sst2_badnets_sample.tsv
AUDIT_OUT := out/sample-audit

.PHONY: setup audit test test-slow test-all clean

setup: $(STAMP)

# torch is pinned and installed first: the pin resolves to a local CPU build, while an
# unpinned torch pulled in by sentence-transformers would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

# The sample is poisoned on purpose, so the gate fails (exit 1); show the verdict, exit 0.
audit: setup
	$(BIN)/trainguard audit $(SAMPLE) --out $(AUDIT_OUT) || [ $$? -eq 1 ]

# The default run leaves out the tests marked slow (pyproject.toml: end-to-end CLI and
# Prefect audits, Dask clusters, model training); test-slow runs only those, test-all both.
test: setup
	$(BIN)/pytest

test-slow: setup
	$(BIN)/pytest -m slow

test-all: test test-slow

clean:
	rm -rf $(VENV) out
