# Serverless LLM Arena. `make run` starts a local fleet; `make test` runs the whole suite.
VENV := .venv
PY := $(VENV)/bin/python
ARENA := $(VENV)/bin/arena
INSTALL_INPUTS := pyproject.toml setup.py scripts/install.sh scripts/build_llama_cpp.sh scripts/llama_cpp_flags.sh \
	scripts/build_llama_server.sh scripts/install_web_assets.sh \
	gateway/web/package.json gateway/web/package-lock.json
PYTEST_ARGS ?=

.PHONY: help install install-test run test bench drills lint-workflows setup-tunnels fleet-up fleet-status fleet-down clean

help:
	@echo "make run      install, then start the local fleet (gateway + embedded models)"
	@echo "make test     install, then run the whole test suite"
	@echo "make bench    every benchmark (arena bench: service, gateway, cores, conversations, fleet, modes, choices, overload; JSON in build/bench.json)"
	@echo "make drills   long fuzzing of both apps and the fault drills (a table at the end)"

$(VENV)/.installed: $(INSTALL_INPUTS)
	bash scripts/install.sh
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed scripts/install_browser.sh scripts/install_postgres.sh scripts/build_llama_server.sh
	bash scripts/install_browser.sh
	bash scripts/install_postgres.sh
	bash scripts/install.sh --llama-server
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(ARENA) up

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(ARENA) bench --json build/bench.json

drills: install-test
	FUZZ_EXAMPLES=200 $(PY) -m pytest tests/fuzz -q
	$(PY) -m tests.drills

clean:
	rm -rf $(VENV) build .pytest_cache

# -- The fleet on GitHub Actions (scripts/fleet_ctl.py, scripts/setup_tunnels.py) ------------
DOMAIN ?=
MODELS ?=

setup-tunnels: install
	@test -n "$(DOMAIN)" || { echo "usage: make setup-tunnels DOMAIN=example.com [DRY_RUN=1]"; exit 2; }
	$(PY) -m scripts.setup_tunnels $(DOMAIN) $(if $(DRY_RUN),--dry-run)

fleet-up: install
	$(PY) -m scripts.fleet_ctl up $(MODELS)

fleet-status: install
	$(PY) -m scripts.fleet_ctl status

fleet-down: install
	$(PY) -m scripts.fleet_ctl down $(MODELS)
