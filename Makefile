# Two commands: `make run` serves the API on the embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000

.PHONY: run test lint format bench workers up cluster cluster-stop clean

$(BIN)/.installed: requirements.txt requirements-dev.txt requirements-dashboard.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-dashboard.txt
	touch $@

run: $(BIN)/.installed
	$(BIN)/gunicorn wsgi:app --bind 127.0.0.1:$(PORT) --workers 1 --threads 8 --access-logfile -

workers: $(BIN)/.installed
	PATH=$(BIN):$$PATH ./run_workers.sh

# The whole system as the Procfile describes it (needs BROKER_URL and DATABASE_URL set).
up: $(BIN)/.installed
	PATH=$(BIN):$$PATH $(BIN)/honcho start

# A local 3-node RabbitMQ cluster beside any RabbitMQ already running; prints its BROKER_URL.
# CLUSTER_PORT, CLUSTER_NAME and CLUSTER_DIR choose its ports, node names and data (rabbitmq_cluster.sh).
cluster:
	./rabbitmq_cluster.sh start

cluster-stop:
	./rabbitmq_cluster.sh stop

# The parallel suite, then the tests that stop RabbitMQ or PostgreSQL themselves, alone.
test: $(BIN)/.installed
	$(BIN)/pytest -n 2 -m "not exclusive"
	$(BIN)/pytest -p no:xdist -m exclusive

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make bench BENCH_ARGS="--quick"`, `make bench BENCH_ARGS="ingest e2e"`; see bench/README.md.
bench: $(BIN)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
