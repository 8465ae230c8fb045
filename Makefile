# labkit: the two commands are `make run` and `make test`; `make lab` to step through the notebooks by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Never let boto3 look for EC2 instance metadata on a machine that is not an EC2 instance.
export AWS_EC2_METADATA_DISABLED := true

.PHONY: run test test-fast lint venv clean bench lab

# Create .venv and install the project when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,test,dev]"
	touch $@

venv: $(VENV)/.installed

## run: the whole kit on the embedded emulator, start to finish
run: venv
	$(PY) -m labkit run-notebooks

## lab: labkit up (if it is not), then JupyterLab on 127.0.0.1 with a token, opened on notebooks/ (Ctrl-C stops
## JupyterLab; labkit keeps running until 99_teardown or `labkit down`)
# Jupyter's token stays on (it prints the URL with it); root is the repository so runs/ shows in the file browser.
LAB_OPTIONS := --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
	$(if $(filter 0,$(shell id -u)),--allow-root)
lab: venv
	$(PY) -m labkit up
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab $(LAB_OPTIONS)

## test: the whole suite (slow end-to-end tests included) in two halves at once (tests/shards.py), then ruff
test: venv
	$(PY) -m tests.shards
	$(VENV)/bin/ruff check labkit worker tests

## test-fast: skip the tests marked slow
test-fast: venv
	$(PY) -m pytest -m "not slow"

## bench: throughput, latency and big jobs against a floor measured in the same run
bench: venv
	$(PY) -m labkit bench

lint: venv
	$(VENV)/bin/ruff check labkit worker tests

clean:
	rm -rf $(VENV) .labkit runs .pytest_cache
