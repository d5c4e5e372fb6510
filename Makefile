# The two commands of README.md. Both create and fill .venv when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/local
TRIALS ?= 4
SEEDS  ?= 2
EPOCHS ?= 3

.PHONY: run smoke test lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job, on the synthetic benchmark (small size) and an embedded Ray: a sweep of the two
# loss weights, the ablation ERM / AsyIRM / MMSD / RiSe x 4 protocols x SEEDS seeds at the
# sweep's best weights, then the tables, figures and HTML reports (about 10 min on 2 cores). It
# replaces OUT/sweep and OUT/ablation of an earlier run: give another OUT=DIR to keep them.
RAY_ENV := RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} RISE_DIST_DATA=$${RISE_DIST_DATA:-$(OUT)/data}
run: $(STAMP)
	rm -rf $(OUT)/sweep $(OUT)/ablation
	$(RAY_ENV) $(PY) experiments/sweep.py --synthetic small --space weights --trials $(TRIALS) --epochs $(EPOCHS) --out $(OUT)/sweep
	$(RAY_ENV) $(PY) experiments/ablation.py --synthetic small --weights best-of:$(OUT)/sweep --seeds $(SEEDS) --epochs $(EPOCHS) --out $(OUT)/ablation
	$(PY) -m analysis figures --results $(OUT)/ablation --out $(OUT)/figures/ablation
	$(PY) -m analysis figures --results $(OUT)/sweep --out $(OUT)/figures/sweep
	$(PY) -m analysis report --results $(OUT)/sweep --out $(OUT)/sweep-report.html
	$(PY) -m analysis report --results $(OUT)/ablation --out $(OUT)/report.html --published
	$(PY) -m analysis tables --results $(OUT)/ablation --format latex > $(OUT)/table.tex
	$(PY) -m analysis tables --results $(OUT)/ablation --published | tee $(OUT)/table.md
	@echo "report: $(OUT)/report.html (sweep: $(OUT)/sweep-report.html); figures: $(OUT)/figures; tables: $(OUT)/table.md, $(OUT)/table.tex"

# The whole sweep path in about a minute, on tiny data.
smoke: $(STAMP)
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) experiments/sweep.py --smoke --out $(OUT)/smoke

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
