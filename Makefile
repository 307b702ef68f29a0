# One-command set-up: every target creates .venv and installs fovea with its dev extra first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pins for these machines; pyproject.toml declares the supported ranges.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-notebooks test-browser install docs clean data

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

test-slow: $(STAMP) data
	$(BIN)/python -m pytest -q -m slow tests/slow

# Every notebook in notebooks/, executed top to bottom (offline, CPU).
test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -q -m notebooks tests/notebooks

# The browser test of `fovea serve`, with Debian's Chromium and chromedriver (installed when missing).
test-browser: $(STAMP)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium chromium-driver; \
	else echo "install Chromium and chromedriver with your package manager"; exit 1; fi
	$(BIN)/python -m pytest -q tests/serve/test_serve_browser.py

docs: $(STAMP)
	$(BIN)/python scripts/gen_models_doc.py > docs/models.md

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

# Fashion-MNIST from Debian's dataset-fashion-mnist; fovea reads it in place from
# /usr/share/datasets/fashion-mnist. Other datasets download on first use.
data:
	@if dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
		echo "dataset-fashion-mnist is installed"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; \
	else \
		echo "apt-get is not available: put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"; \
		echo "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (Fashion-MNIST) in"; \
		echo "$${FOVEA_DATA:-$$HOME/.cache/fovea/data}/FashionMNIST/raw, or run fovea online once to download them."; \
	fi
