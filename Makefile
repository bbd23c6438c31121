# Every target that needs Python depends on $(INSTALLED): an idempotent install
# that re-runs only when the lock file or the package metadata changed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
# Defaults as the commands' own: the TOOLKIT_* environment variables when set.
REPOSITORY  ?= $(or $(TOOLKIT_REPOSITORY),model_repository)
PIPELINE_ROOT ?= $(or $(TOOLKIT_PIPELINE_ROOT),tfx_runs)
DATA_CACHE  ?= $(or $(TOOLKIT_CACHE_DIR),.cache)
# Which pipelines `make pipeline` runs, in order.
PIPELINES   ?= half_plus_two mnist
# Extra flags for `python -m pipelines run`, e.g. PIPELINE_ARGS="--no-cache".
PIPELINE_ARGS ?=
# Pass-through Beam flags, e.g. BEAM_ARGS="--runner=FlinkRunner --flink_master=host:8081".
BEAM_ARGS   ?=
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (tests/conftest.py groups the tests); 0 runs in one process.
TEST_WORKERS ?= 3

# Retraining (python -m pipelines retrain): MODEL's spans span-1/, span-2/, ... under DATA.
MODEL        ?= mnist
DATA         ?= spans/$(MODEL)
# Extra flags for `python -m pipelines retrain`, e.g. RETRAIN_ARGS="--window 5 --accept-drift".
RETRAIN_ARGS ?=
# Extra flags for `python -m pipelines make-spans`, e.g. SPANS_ARGS="--kind corrupted".
SPANS_ARGS   ?=

# Serving (python -m serving): where the running server is recorded, which backend, image.
comma := ,
empty :=
space := $(empty) $(empty)
SERVING_STATE   ?= $(or $(TOOLKIT_STATE_DIR),.cache/serving)
SERVING_BACKEND ?= auto
SERVING_MODELS  ?= $(subst $(space),$(comma),$(strip $(PIPELINES)))
# The official image when it is present, else the stand-in built by `make serving-image`.
SERVING_IMAGE   ?= $(shell docker image inspect tensorflow/serving:2.16.1 >/dev/null 2>&1 \
                     && echo tensorflow/serving:2.16.1 || echo tfx-serving-toolkit/model-server:latest)
# Extra `python -m serving up` flags; server flags after `--`, e.g. SERVE_ARGS="-- --enable_batching".
SERVE_ARGS      ?=

# Notebooks (make notebook): Jupyter on 127.0.0.1 only, with the venv as a named kernel.
NOTEBOOK_PORT ?= 8888
KERNEL_NAME   := tfx-serving-toolkit

PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
INSTALLED   := $(VENV)/.installed
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/$(KERNEL_NAME)/kernel.json

# A real Python 3.10: $(PYTHON) if given, then python3.10 if it runs, then pyenv's 3.10.
PYTHON ?= $(shell \
  if python3.10 -c '' >/dev/null 2>&1; then command -v python3.10; \
  elif command -v pyenv >/dev/null 2>&1; then \
    for v in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.[0-9]+)?$$' | sort -t. -k3 -n -r); do \
      p="$$(pyenv prefix $$v 2>/dev/null)/bin/python3.10"; \
      if "$$p" -c '' >/dev/null 2>&1; then echo "$$p"; break; fi; \
    done; \
  fi)

.PHONY: help install lock pipeline retrain spans history test test-unit lint docs clean serving-image \
        serve serve-status serve-down protos notebook kernel

help:
	@echo "make pipeline   train, evaluate and push $(PIPELINES) into $(REPOSITORY)/"
	@echo "make pipeline-NAME  run one pipeline (half_plus_two, mnist)"
	@echo "make retrain    retrain MODEL=$(MODEL) on the newest span in DATA=$(DATA)"
	@echo "make spans      write the next span of MODEL's data into DATA (SPANS_ARGS=--kind corrupted)"
	@echo "make history    past runs of MODEL (from ML Metadata)"
	@echo "make serve      serve $(REPOSITORY)/ (docker if a daemon and image are there, else a process)"
	@echo "make serve-status / serve-down   health of the running server / stop it"
	@echo "make serving-image  build the stand-in TF Serving image (no registry needed; cached)"
	@echo "make notebook   Jupyter on 127.0.0.1:$(NOTEBOOK_PORT) with notebooks/mnist_experiment.ipynb"
	@echo "make kernel     register $(VENV) as the Jupyter kernel '$(KERNEL_NAME)' (done by notebook, test)"
	@echo "make test       run the whole test suite (unit + e2e)"
	@echo "make test-unit  run the fast unit tests only"
	@echo "make install    create $(VENV) from requirements.lock (done by the targets above)"
	@echo "make lock       re-resolve requirements.in into requirements.lock"
	@echo "make protos     regenerate the model server's *_pb2.py from its vendored .proto files"
	@echo "make docs       regenerate docs/cli.md, the command-line reference, from the parsers"
	@echo "make clean      remove the venv, ./tfx_runs and ./.cache's data (keeps model_repository/)"
	@echo "Variables: PYTHON REPOSITORY PIPELINE_ROOT DATA_CACHE PIPELINES PIPELINE_ARGS BEAM_ARGS PYTEST_ARGS TEST_WORKERS"
	@echo "           MODEL DATA RETRAIN_ARGS SPANS_ARGS"
	@echo "           SERVING_STATE SERVING_BACKEND SERVING_MODELS SERVING_IMAGE SERVE_ARGS"
	@echo "           NOTEBOOK_PORT"

install: $(INSTALLED)

# --compile-bytecode: uv writes no .pyc by default, nor does Python where PYTHONDONTWRITEBYTECODE
# is set (as on the CI machine), and then every process compiles TensorFlow's and TFX's sources
# again: `import tfx.v1` took 35 s instead of 11 s (benchmarks/README.md, issue 17).
$(INSTALLED): requirements.lock setup.cfg pyproject.toml
	@if [ -z "$(PYTHON)" ] || ! "$(PYTHON)" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then \
	  echo "error: Python 3.10 not found (TFX 1.16 needs 3.9-3.10)." >&2; \
	  echo "  Install it (e.g. 'pyenv install 3.10.13' or 'apt-get install python3.10') or pass PYTHON=/path/to/python3.10." >&2; \
	  exit 1; fi
	@echo "Using $(PYTHON)"
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@[ -x $(UV) ] || $(PY) -m pip install --quiet --disable-pip-version-check \
	  "uv==$$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements.lock)"
	$(UV) pip sync --quiet --python $(PY) --require-hashes --compile-bytecode requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	@touch $@

lock: $(INSTALLED)
	$(UV) pip compile --quiet --python-version 3.10 --python-platform x86_64-manylinux_2_36 \
	  --generate-hashes requirements.in -o requirements.lock

# The TF Serving config protos the tensorflow-serving-api wheel lacks, generated with the locked
# grpcio-tools' protoc (tests/serving/model_server/test_ms_protos.py checks they are current).
protos: $(INSTALLED)
	$(PY) -m serving.model_server.protos.build

pipeline: $(INSTALLED)
	$(PY) -m pipelines run $(PIPELINES) --repository $(REPOSITORY) --pipeline-root $(PIPELINE_ROOT) \
	  --cache-dir $(DATA_CACHE) --state-dir $(SERVING_STATE) \
	  $(PIPELINE_ARGS) $(if $(strip $(BEAM_ARGS)),-- $(BEAM_ARGS))

pipeline-%: $(INSTALLED)
	$(MAKE) --no-print-directory pipeline PIPELINES=$*

retrain: $(INSTALLED)
	$(PY) -m pipelines retrain $(MODEL) --data $(DATA) --repository $(REPOSITORY) \
	  --pipeline-root $(PIPELINE_ROOT) --cache-dir $(DATA_CACHE) --state-dir $(SERVING_STATE) \
	  $(RETRAIN_ARGS) $(if $(strip $(BEAM_ARGS)),-- $(BEAM_ARGS))

spans: $(INSTALLED)
	$(PY) -m pipelines make-spans $(MODEL) --out $(DATA) --cache-dir $(DATA_CACHE) $(SPANS_ARGS)

history: $(INSTALLED)
	$(PY) -m pipelines history $(MODEL) --pipeline-root $(PIPELINE_ROOT) --repository $(REPOSITORY)

serving-image: $(INSTALLED)
	PYTHON=$(PY) serving/image/build.sh

serve: $(INSTALLED)
	$(PY) -m serving up --repository $(REPOSITORY) --model $(SERVING_MODELS) \
	  --backend $(SERVING_BACKEND) --image $(SERVING_IMAGE) --state-dir $(SERVING_STATE) $(SERVE_ARGS)

serve-status: $(INSTALLED)
	$(PY) -m serving status --state-dir $(SERVING_STATE)

serve-down: $(INSTALLED)
	$(PY) -m serving down --state-dir $(SERVING_STATE)

kernel: $(KERNEL_SPEC)

# Inside the venv (--prefix): its own Jupyter finds it, nothing outside it changes.
$(KERNEL_SPEC): $(INSTALLED)
	$(PY) -m ipykernel install --prefix $(VENV) --name $(KERNEL_NAME) \
	  --display-name "Python 3.10 ($(KERNEL_NAME))" --env TF_CPP_MIN_LOG_LEVEL 2 \
	  --env PYTHONWARNINGS "ignore::DeprecationWarning,ignore::FutureWarning"

notebook: $(KERNEL_SPEC)
	@echo "Jupyter on http://127.0.0.1:$(NOTEBOOK_PORT)/ (this machine only); the URL with its token follows."
	$(PY) -m jupyter lab --no-browser --ip=127.0.0.1 --port=$(NOTEBOOK_PORT) \
	  --ServerApp.root_dir=$(CURDIR) $(if $(filter 0,$(shell id -u)),--allow-root) \
	  notebooks/mnist_experiment.ipynb

test: $(INSTALLED) $(KERNEL_SPEC)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-unit: $(INSTALLED)
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

# docs/cli.md: every command's --help (tests/test_cli_reference.py checks it is current).
docs: $(INSTALLED)
	$(PY) docs/cli_reference.py

lint: $(INSTALLED)
	$(PY) -m flake8 pipelines components serving tests benchmarks docs

# Only this checkout's own directories, never a TOOLKIT_* location elsewhere.
clean:
	rm -rf $(VENV) tfx_runs .pytest_cache .cache/mnist .cache/serving-image
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
