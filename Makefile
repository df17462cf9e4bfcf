# The two set-up commands: `make demo` (the main job) and `make test`. Both create .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The torch build installed first (a range that admits it is in pyproject.toml).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,notebooks,dlib,onnx,faiss

.PHONY: demo test lab install clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC) 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) -m pip install -q -e '.[$(EXTRAS)]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) -c "import torch, timm, facenet_pytorch, pytorch_metric_learning, fr_lib, config"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null  # kernel of this venv, for papermill and make lab
	touch $@

demo: install
	$(VENV)/bin/fr demo

test: install
	$(PY) -m pytest -q

lab: install
	$(VENV)/bin/jupyter lab

clean:
	rm -rf $(VENV) runs data/synth-demo
