# vaelab: `make train` and `make test` are the two commands of the quick start.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000
SERVER_PORT ?= 5001
ARGS   ?=

.PHONY: install train test test-fast ui server bench bench-tracking bench-pictures bench-sweep bench-peers clean

install: $(STAMP)

# Re-installs whenever pyproject.toml changes; plain pip so that local wheel caps are honoured.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat  # compat: Hydra finds hydra_plugins/ of the checkout
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m vaelab $(ARGS)

# Two test files at a time (-n 2, each file on one worker: module-scoped servers and clusters stay put).
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

# vaelab's store (VAELAB_HOME, else this checkout's runs/) in the MLflow UI: the same as `vaelab ui`.
ui: $(STAMP)
	$(PY) -m vaelab.ui --host $(HOST) --port $(PORT)

# A shared tracking server: PostgreSQL (data in runs/postgres, kept) + MLflow on $(HOST):$(SERVER_PORT),
# in the foreground; it prints the tracking.uri= to pass to vaelab; Ctrl-C stops both.
server: $(STAMP)
	$(PY) -m vaelab.services server --host $(HOST) --port $(SERVER_PORT)

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py $(ARGS)

# What tracking costs: the real command tracked against tracking=none, side by side (fixed and per epoch).
bench-tracking: $(STAMP)
	$(PY) benchmarks/bench_tracking.py $(ARGS)

# What one epoch's pictures cost in CPU (PYTHONPATH=<other checkout> to compare two versions in turn).
bench-pictures: $(STAMP)
	$(PY) benchmarks/bench_pictures.py $(ARGS)

# A 16-job sweep under hydra/launcher=stacked against the basic launcher, side by side (ARGS="--epochs 2" ...).
bench-sweep: $(STAMP)
	$(PY) benchmarks/bench_sweep.py $(ARGS)

# experiment=keras_seed against the seed's own Keras model (Keras 3 on the same torch). Keras is
# not a vaelab dependency: it goes into .peers/, next to vaelab's packages, not into them.
PEERS := .peers
$(PEERS)/keras: $(STAMP)
	$(PY) -m pip install --quiet --upgrade --target $(PEERS) --no-deps 'keras>=3.5' absl-py h5py ml-dtypes optree namex

bench-peers: $(PEERS)/keras
	$(PY) benchmarks/bench_peers.py $(ARGS)

clean:
	rm -rf $(VENV) $(PEERS) build dist *.egg-info .pytest_cache
