# Bootstrap-on-first-use: every target depends on the virtualenv, which is (re)built only
# when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCENARIO ?= battle
PRESET ?=
ARGS ?=
SCENARIOS := jungle battle deception

.PHONY: install test test-all lint format train bench bench-env reproduce render wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m '' tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: $(STAMP)
	@case " $(SCENARIOS) " in *" $(SCENARIO) "*) ;; \
	  *) echo "error: SCENARIO='$(SCENARIO)' is unknown; choose one of: $(SCENARIOS)" >&2; exit 2;; esac
	$(PY) -m experiments.train --scenario $(SCENARIO) $(if $(PRESET),--preset $(PRESET)) $(ARGS)

bench: $(STAMP)
	$(PY) -m experiments.bench_scaling --json bench/results.json --plot docs/media/scaling.png $(ARGS)

bench-env: $(STAMP)
	$(PY) -m experiments.bench_env --scenario $(SCENARIO) --num-agents 10000 --json bench/env_$(SCENARIO)_10000.json $(ARGS)

reproduce: $(STAMP)
	$(PY) -m experiments.reproduce all --out results/reproduce $(ARGS)

render: $(STAMP)
	$(PY) -m experiments.render --scenario $(SCENARIO) --preset tiny --out docs/media/$(SCENARIO).gif

# The wheels experiments/gpu_env.sh installs on a bare CUDA image that has jax/flax/optax/chex/
# orbax but not the rest: this virtualenv's versions, pure-Python (protobuf's universal wheel).
WHEELS := jraph tyro docstring-parser typeguard rich markdown-it-py mdurl pygments \
  typing-extensions tqdm tensorboardx
wheels: $(STAMP)
	$(PY) -m pip download --quiet --no-deps -d .whl $$($(PY) -m pip freeze | sed 's/_/-/g' | \
	  grep -i -E '^($(subst $(eval) ,|,$(WHEELS)))==')
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --platform any -d .whl \
	  $$($(PY) -m pip freeze | grep -i '^protobuf==')

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
