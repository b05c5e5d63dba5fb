# Two commands on a fresh machine:  `make run` (gateway + simulated engines)  and  `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,limits,semantic,plots,tracing]' 'torch==2.13.0'
	touch $(STAMP)

# The embedded default: in-memory state, no Redis, no GPU, no API key. The backends in config.toml
# are served by SIMULATED engines started alongside (loadtest/engine).
run: install
	$(VENV)/bin/switchyard serve --config config.toml --simulate

# The whole suite. Tests that need Redis use $$REDIS_URL; when no Redis answers on 6379 a private
# redis-server is started for the run and stopped after.
test: install
	@bash scripts/with-redis.sh $(PY) -m pytest -q

bench: install
	$(PY) -m loadtest.overhead

clean:
	rm -rf $(VENV) *.egg-info
