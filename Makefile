# One-command set-up: every target creates .venv and installs fovea with its dev extra first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pins for these machines; pyproject.toml declares the supported ranges.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fovea demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -x tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/slow

docs: $(STAMP)
	$(BIN)/python scripts/gen_models_doc.py > docs/models.md

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
