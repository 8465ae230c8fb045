# labkit: the two commands are `make run` and `make test`; `make lab` to step through the notebooks by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Never let boto3 look for EC2 instance metadata on a machine that is not an EC2 instance.
export AWS_EC2_METADATA_DISABLED := true

.PHONY: run test test-fast lint venv clean bench lab lock

# A new .venv whenever the lock changes: exactly requirements.lock's versions, each checked by its hash (pip and the
# build backend included), then labkit itself from this folder.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
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

## test: the installed versions checked against the lock, the whole suite (slow end-to-end tests included) in two
## halves at once (tests/shards.py), then ruff
test: venv
	$(PY) .ci/lock.py check
	$(PY) -m tests.shards
	$(VENV)/bin/ruff check labkit worker tests .ci notebooks

## test-fast: the tests that need no emulator, no worker and no labkit process (protocol, keys, jobs, config, kinds,
## presenters, policies, architecture, plots...: tests/conftest.py marks them fast), in one process: about 20 s
test-fast: venv
	$(PY) -m pytest -m fast

## bench: throughput, latency and big jobs against a floor measured in the same run
bench: venv
	$(PY) -m labkit bench

## lock: resolve requirements.lock (and the EC2 worker's pins) anew from the package registry, then run the suite
## on a new .venv made from it; commit the two files once it passes
lock: venv
	$(PY) .ci/lock.py refresh
	$(MAKE) test

lint: venv
	$(VENV)/bin/ruff check labkit worker tests .ci notebooks

clean:
	rm -rf $(VENV) .labkit runs .pytest_cache
