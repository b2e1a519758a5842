.PHONY: demo test clean
# The two commands a new user needs (README.md): `make demo` and `make test` (ruff, mypy, pytest).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed-app: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[app]'
	touch $@

$(VENV)/.installed-test: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-app

# The main job: train a small LSTM language model on Python's own documentation (built in, nothing
# downloaded) for 2.5 minutes, then sample from it.  The run directory is runs/demo.
demo: $(VENV)/.installed-app
	rm -rf runs/demo
	$(VENV)/bin/rnnkit train --minutes 2.5 --out runs/demo
	$(VENV)/bin/rnnkit sample runs/demo --prime "The " --length 400 --temperature 0.7 --seed 1

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
