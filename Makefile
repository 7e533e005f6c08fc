# uipbench: `make demo` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UIPBENCH := $(VENV)/bin/uipbench
# torch first and pinned: torch==2.13.0 is the local CPU build; an unpinned torch pulls CUDA wheels
TORCH := torch==2.13.0

.PHONY: demo test test-slow test-core test-backbones envs benchmarks clean-envs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH) -e '.[test]'
	touch $@

envs: $(VENV)/.installed
	$(UIPBENCH) env sync

demo: $(VENV)/.installed
	$(UIPBENCH) demo

test: envs
	$(PY) -m pytest tests/core -q
	@for env in .venvs/*/; do \
		echo "== backbone tests in $$env"; \
		$$env/bin/python -m pytest tests/backbones -q -p no:cacheprovider || exit 1; \
	done

# slow tests (real DFT re-labelling, long relaxations) and real-weight tests, all environments
test-slow: envs
	$(PY) -m pytest tests/core -q -m "slow or not slow"
	@for env in .venvs/*/; do \
		$$env/bin/python -m pytest tests/backbones -q -p no:cacheprovider -m "slow or not slow" || exit 1; \
	done

benchmarks: envs
	$(PY) benchmarks/bench_delta.py
	$(PY) benchmarks/bench_mptrj.py

clean-envs:
	rm -rf $(VENV) .venvs

# speed regressions (pytest-benchmark, benchmarks/test_speed.py; not in `make test`): `bench-baseline`
# saves baselines in reports/baselines/speed (one tag per environment), `bench-compare` measures again
# and prints current / baseline ratios of the minimum and median times (benchmarks/compare_speed.py)
SPEED_STORE := reports/baselines/speed
SPEED_RUN := .cache/speed
BENCH_OPTS := -q -p no:cacheprovider --benchmark-enable --benchmark-storage=$(SPEED_STORE)

.PHONY: bench-baseline bench-compare

bench-baseline: envs
	$(PY) -m pytest benchmarks/test_speed.py $(BENCH_OPTS) -k delta --benchmark-save=core
	@for env in .venvs/*/; do name=$$(basename $$env); echo "== embedding speed in $$env"; \
		$$env/bin/python -m pytest benchmarks/test_speed.py $(BENCH_OPTS) -k embed --benchmark-save=$$name || exit 1; \
	done

bench-compare: envs
	@rm -rf $(SPEED_RUN) && mkdir -p $(SPEED_RUN)
	$(PY) -m pytest benchmarks/test_speed.py $(BENCH_OPTS) -k delta --benchmark-json=$(SPEED_RUN)/core.json
	@for env in .venvs/*/; do name=$$(basename $$env); echo "== embedding speed in $$env"; \
		$$env/bin/python -m pytest benchmarks/test_speed.py $(BENCH_OPTS) -k embed --benchmark-json=$(SPEED_RUN)/$$name.json || exit 1; \
	done
	$(PY) benchmarks/compare_speed.py --storage $(SPEED_STORE) --current $(SPEED_RUN)
