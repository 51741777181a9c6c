# Two commands: `make demo` (train + evaluate + report on the demo data) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The slowest tests are listed at the end of each pass, so CI's log shows where its minutes go.
# One worker per core (pytest-xdist), each test file on one worker so that its module fixtures (a trained
# run) are made once: much of a test's time is Python (tracing, starting servers), not the cores' math.
PYTEST_ARGS ?= --durations=25 -n auto --dist loadfile

.PHONY: demo test install dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The demo trains: Keras on TensorFlow (the core alone has no backend; see README "Install").
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[tensorflow]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,tensorflow,jax,serve,onnx,pacs]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/ultrasonic demo

# Everything under TensorFlow (the default backend), then the end-to-end tests again under JAX,
# except the slow ones (several trainings each, e.g. the pointing games) and those marked `once`
# (HTTP, the page, data handling: nothing there depends on the backend): once is enough for those.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -m "e2e and not slow and not once" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
