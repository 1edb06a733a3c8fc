# Two commands on a fresh machine: `make run` (install everything, train the study's CNN)
# and `make test` (the whole suite, with ruff). Everything lives in .venv at the repo root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGIN_DIRS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
# The study's data beside the project, when present (a JPEG-75 copy with its own checksums).
DATA ?= $(abspath ../shared/data)
DATA_FLAGS := $(if $(wildcard $(DATA)/cifar-10-batches-py),--data-dir $(DATA) --data-checksums $(DATA)/cifar-10-batches-py.md5)
RUN_ARGS ?=

.PHONY: install run test lint format study clean

$(VENV)/.installed: pyproject.toml $(addsuffix pyproject.toml,$(PLUGIN_DIRS)) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: pip takes these two from this machine's disk (no multi-GB download)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]' $(addprefix -e ,$(PLUGIN_DIRS))
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/cifarfw run --plugin torch-cnn $(DATA_FLAGS) $(RUN_ARGS)

# The whole study in one command: its three models on their study recipes (one that cannot
# run, e.g. alexnet without its weights offline, is reported and the others still run), then
# the comparison beside the study's published figures, on screen and as one HTML file.
STUDY_ROOT ?= runs/study
STUDY_RECIPE ?= study
study: install
	-$(BIN)/cifarfw run --plugin torch-cnn --plugin keras-cnn --plugin alexnet --recipe $(STUDY_RECIPE) \
		--runs-root $(STUDY_ROOT) $(DATA_FLAGS) $(RUN_ARGS)
	$(BIN)/cifarfw compare --runs-root $(STUDY_ROOT) --with-study
	$(BIN)/cifarfw compare --runs-root $(STUDY_ROOT) --with-study --format html --output $(STUDY_ROOT)/compare.html

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
