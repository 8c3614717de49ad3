# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench bench-reference clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned by constraints.txt to the CPU wheel; a looser pin pulls a CUDA build
	# the ray extra too, so that the cluster tests (tests/distributed/) run in CI; about 1 minute more
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,ray]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/deepids demo --out demo-output

test: setup
	# two workers (pytest-xdist); a test module stays on one worker, the Ray modules share one (tests/conftest.py)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: setup
	$(BIN)/python -m bench

# TensorFlow for the Keras reference of `make bench`, in its own venv (python -m bench finds it);
# `pip install -e '.[reference]'` into .venv works as well
bench-reference:
	$(PYTHON) -m venv .venv-reference
	.venv-reference/bin/pip install --quiet 'tensorflow-cpu>=2.16'

clean:
	rm -rf $(VENV) .venv-reference demo-output .pytest_cache
