# The README's two commands: `make audit` and `make test`. Both build the venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := sample_data/sst2_badnets_sample.tsv
AUDIT_OUT := out/sample-audit

.PHONY: setup audit test test-all clean

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

# The default run (what CI gates on) leaves out the tests marked slow (pyproject.toml);
# test-all runs every test, the slow end-to-end ones included.
test: setup
	$(BIN)/pytest

test-all: setup
	$(BIN)/pytest -m "slow or not slow"

clean:
	rm -rf $(VENV) out
