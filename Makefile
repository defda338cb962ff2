# The two set-up commands: `make run` and `make test`. Both create/update .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test check lint format bench clean

RUN_STAMP := $(VENV)/.installed-run

# Everything: the tests load every framework and drive the AWS CLI.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,frameworks]'
	@touch $(STAMP)

# What serving and the demo need (scikit-learn) and the AWS CLI; nothing to do after `make test`.
$(RUN_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $(RUN_STAMP); else \
	  $(PY) -m pip install -q --disable-pip-version-check --upgrade pip && \
	  $(PY) -m pip install -q --disable-pip-version-check -e '.[aws]' && \
	  echo "Other model frameworks: $(VENV)/bin/pip install -e '.[torch]' (or xgboost, onnx, transformers, frameworks for all)" && \
	  touch $(RUN_STAMP); fi

venv: $(STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/modelhost serve --demo

test: $(STAMP)
	@sh scripts/ensure-podman.sh
	@sh scripts/ensure-postgres.sh
	$(PY) -m pytest

check: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
