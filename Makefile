# `make demo` and `make test` set everything up on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint setup clean

# constraints.txt: the exact versions of everything else, so that CI and results do not change
# with a dependency's new release
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,plot,slurm,tb]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: every method on gmm2d at 5% reference, then their comparison table.
demo: $(STAMP)
	$(BIN)/tiwbench sweep --dataset gmm2d --methods all --refs 0.05 --seeds 0
	$(BIN)/tiwbench table --dataset gmm2d

lint: $(STAMP)
	$(BIN)/ruff check .

# Everything, as CI runs it: lint, then every test (pytest exits 5 on no tests: a failure too), in
# one worker per core (pytest-xdist; tests/conftest.py gives each worker one thread).
test: lint
	$(BIN)/python -m pytest tests -n auto

# The inner loop: lint and the tests not marked slow.
test-fast: lint
	$(BIN)/python -m pytest tests -n auto -m "not slow"

clean:
	rm -rf $(VENV) results/runs
