# The two commands of README.md. Both create and fill .venv when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/local

.PHONY: run smoke test lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job: the synthetic benchmark, then a small local sweep of the RiSe loss weights over
# the four leave-one-out protocols on an embedded Ray (about 10-15 min on 2 cores).
run: $(STAMP)
	$(PY) experiments/prepare_data.py --synthetic --out $(OUT)/synthetic-cache
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) experiments/sweep.py --trials 4 --epochs 2 --out $(OUT)/sweep

# The whole sweep path in about a minute, on tiny data.
smoke: $(STAMP)
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) experiments/sweep.py --smoke --out $(OUT)/smoke

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
