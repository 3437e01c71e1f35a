# The README's commands. Each installs what it needs and is safe to run twice.
VENV ?= .venv
PY := $(VENV)/bin/python
VGG := $(VENV)/bin/vgg
# A CPU build of torch is found locally on our machines; elsewhere set TORCH to any torch>=2.10.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Fashion-MNIST: Debian's package where we can install it; otherwise `vgg` finds it in $VGG_DATA
# or downloads it (SHA-256 checked) on first use.
data: setup
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ] && [ -z "$$VGG_DATA" ] && \
	   command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || \
	  echo "note: could not install dataset-fashion-mnist; vgg will download Fashion-MNIST"; \
	fi

# Train a VGG (B with BN, width 0.25) on Fashion-MNIST with the paper's recipe (recipes/demo.toml),
# then evaluate it on the official test split with the paper's dense multi-scale protocol. Each run
# replaces runs/demo (and says so).
DEMO := runs/demo
demo: setup data
	@if [ -e $(DEMO) ]; then echo "make demo: replacing the previous run in $(DEMO)"; fi; \
	rm -rf $(DEMO); start=$$(date +%s); \
	$(VGG) train --config recipes/demo.toml --output $(DEMO) && \
	$(VGG) evaluate $(DEMO) --split test --protocol dense --floor-pooling --json $(DEMO)/test.json \
	    --confusion $(DEMO)/confusion.png && \
	echo "" && echo "demo finished in $$(( $$(date +%s) - start )) s (training + evaluation)." && \
	echo "plots: $(DEMO)/curves.png (loss, accuracy, learning rate per epoch)," \
	     "$(DEMO)/confusion.png (test confusion matrix)" && \
	echo "model: $(DEMO)/best.safetensors; log: $(DEMO)/log.jsonl; test metrics: $(DEMO)/test.json"

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: setup data lint
	$(VENV)/bin/pytest -q

bench: setup
	@$(PY) -c "import openvino" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]' || \
	  echo "note: could not install OpenVINO; its rows are left out"
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
