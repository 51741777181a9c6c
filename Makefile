# Two commands: `make demo` (train + evaluate + report on the demo data) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,jax,serve,onnx]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/ultrasonic demo

# Everything under TensorFlow (the default backend), then the end-to-end tests again under JAX.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
