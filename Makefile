.PHONY: demo test docs docs-serve docs-images clean
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
	touch $@ $(VENV)/.installed-app $(VENV)/.installed-docs

$(VENV)/.installed-docs: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[app,docs]'
	touch $@

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

# The documentation site (docs/, mkdocs.yml) built into site/: strict, so a broken link, a missing
# page or reference, or a public name without a docstring fails the build.  tests/test_docs.py runs
# the same strict build and executes the pages' code examples.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# The pictures are made by scripts, never by hand: the gradient-flow picture by `rnnkit diagnose`,
# the char-LM loss curve is the loss.png that `make demo` writes (2.5 minutes of training).
docs-images: $(VENV)/.installed-docs
	$(VENV)/bin/rnnkit diagnose --out docs/gradient_flow.png
	$(MAKE) demo
	cp runs/demo/loss.png docs/charlm_demo_loss.png

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache site
