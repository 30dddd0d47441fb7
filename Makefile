# polyhead: `make all` runs the whole job on the built-in synthetic data; `make test` runs the tests.
# Variables (override on the command line, e.g. `make train BACKBONE=squeezenet EPOCHS=3`):
PY          ?= python3
PY_LEGACY   ?= python3.11
PY_MEDIAPIPE ?= python3.11
DATA        ?= data/synthetic
NUM_IMAGES  ?= 6000
SYNTH_SIZE  ?= 128
HOLDOUT     ?= 4
SEED        ?= 0
RUN         ?= runs/default
BACKBONE    ?= efficientnet_lite0
IMAGE_SIZE  ?= 128
EPOCHS      ?= 12
BATCH_SIZE  ?= 32
WEIGHTS     ?= imagenet
PROTOCOL    ?= frozen
PAPER_WEIGHTS ?= none
COMPOSE     ?= auto
APPROACHES  ?= multihead,joint,separate
PRECISIONS  ?= float32,int8
THREADS     ?= 1
RUNS        ?= 50
ROUNDS      ?= 8
LIVE_S      ?= 30
LIVE_SOAK_S ?= 60
PYTEST_ARGS ?=
REF         ?= HEAD

VENV   := .venv
BIN    := $(VENV)/bin
LEGACY := .venv-legacy
STAMP  := $(VENV)/.installed
LEGACY_STAMP := $(LEGACY)/.installed
MEDIAPIPE := .venv-mediapipe
MEDIAPIPE_STAMP := $(MEDIAPIPE)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup setup-legacy setup-mediapipe setup-pi setup-system test-fresh all data train convert bench report paper bench-scale compare compose test test-fast test-pi lint clean

# The variables above, by name: `make help` prints the value each has in this invocation.
VARIABLES := $(shell sed -nE 's/^([A-Z_]+) +\?=.*/\1/p' $(firstword $(MAKEFILE_LIST)))

help: ## list targets and variables (with the values in force: `make help EPOCHS=3` shows 3)
	@echo "targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 22
	@echo "variables (value in force; override as VAR=value):"
	@$(foreach v,$(VARIABLES),printf '  %s=%s\n' '$(v)' '$($(v))';)

# Two distributions: polyhead (pyproject.toml, edge/ only: what a Pi installs) and polyhead-host
# (host/pyproject.toml: datasets, train, convert, report, artifacts).
$(STAMP): pyproject.toml host/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[host,dev]' -e ./host
	@touch $@

setup: $(STAMP) ## create .venv with the host and dev extras (re-run only when pyproject.toml changes)

# The older edge runtime: tflite-runtime 2.14 needs Python <= 3.11 and numpy < 2.
$(LEGACY_STAMP): pyproject.toml
	$(PY_LEGACY) -m venv $(LEGACY)
	$(LEGACY)/bin/pip install -q --upgrade pip
	$(LEGACY)/bin/pip install -q 'tflite-runtime==2.14.0' 'numpy<2' Pillow click pytest hypothesis
	$(LEGACY)/bin/pip install -q --no-deps -e .
	@touch $@

setup-legacy: $(LEGACY_STAMP) ## create .venv-legacy (tflite-runtime 2.14 + numpy<2) for the edge tests

# MediaPipe Tasks (test only, ~700 MB with OpenCV): proves every file runs in its ImageClassifier.
$(MEDIAPIPE_STAMP): pyproject.toml
	$(PY_MEDIAPIPE) -m venv $(MEDIAPIPE)
	$(MEDIAPIPE)/bin/pip install -q --upgrade pip
	$(MEDIAPIPE)/bin/pip install -q 'mediapipe==1.2.3' numpy Pillow click ai-edge-litert
	$(MEDIAPIPE)/bin/pip install -q --no-deps -e .
	@touch $@

setup-mediapipe: $(MEDIAPIPE_STAMP) ## create .venv-mediapipe (MediaPipe Tasks) for the TFLite Metadata tests

all: $(STAMP) ## the whole job: data, train, convert, bench, report (reuses what is done)
	$(BIN)/python -m report.pipeline --data $(DATA) --run $(RUN) --backbone $(BACKBONE) \
	  --image-size $(IMAGE_SIZE) --epochs $(EPOCHS) --batch-size $(BATCH_SIZE) --weights $(WEIGHTS) \
	  --protocol $(PROTOCOL) --num-images $(NUM_IMAGES) --synth-size $(SYNTH_SIZE) --holdout-combos $(HOLDOUT) \
	  --precision $(PRECISIONS) --threads $(THREADS) --bench-runs $(RUNS) --seed $(SEED) --compose $(COMPOSE)

data: $(STAMP) ## build the synthetic dataset in DATA
	$(BIN)/python -m datasets synth --out $(DATA) --num-images $(NUM_IMAGES) --image-size $(SYNTH_SIZE) \
	  --holdout-combos $(HOLDOUT) --seed $(SEED)

train: $(STAMP) ## train APPROACHES on DATA into RUN (PROTOCOL: frozen, fine-tune, scratch)
	$(BIN)/python -m train --data $(DATA) --backbone $(BACKBONE) --approach $(APPROACHES) --out $(RUN) \
	  --image-size $(IMAGE_SIZE) --epochs $(EPOCHS) --batch-size $(BATCH_SIZE) --weights $(WEIGHTS) \
	  --seed $(SEED) --protocol $(PROTOCOL) --compose $(COMPOSE) --resume

convert: $(STAMP) ## convert every model in RUN to PRECISIONS
	$(BIN)/python -m convert $(RUN) --precision $(PRECISIONS)

bench: $(STAMP) ## the performance suite on RUN's models (ROUNDS rounds of RUNS runs): bench/results.json, ratios [95 % CI]; live figures (LIVE_S s per rate, LIVE_SOAK_S s soak; LIVE_S=0 skips)
	$(BIN)/python -m report.benchmarks.suite --out bench/results.json --run $(RUN) --runs $(RUNS) --rounds $(ROUNDS) --threads $(THREADS) \
	  --live-seconds $(LIVE_S) --live-soak $(LIVE_SOAK_S)

bench-scale: $(STAMP) ## scale figures: peak RSS of frozen training at 6k/18k/60k images, streamed vs in-memory extraction, 60k converts: bench/scale.json
	$(BIN)/python -m train.bench_scale --out bench/scale.json --sizes 6000,18000,60000 --image-size $(SYNTH_SIZE) \
	  --data-root data --runs-root runs/scale

report: $(STAMP) ## render RUN/report.md and plots from the stages' JSON
	$(BIN)/python -m report $(RUN)

paper: $(STAMP) ## the paper's three backbones (structure, latency) + efficientnet_lite0 (real transfer learning)
	$(BIN)/python -m report.experiments.paper --data $(DATA) --out runs/paper --weights $(PAPER_WEIGHTS) --epochs $(EPOCHS) \
	  --num-images $(NUM_IMAGES) --threads $(THREADS) --seed $(SEED)

compare: $(STAMP) ## scratch vs frozen vs fine-tuned, all approaches, on its own 600-image set: runs/compare/compare.md
	$(BIN)/python -m report.experiments.compare --out runs/compare --seed $(SEED)

compose: $(STAMP) ## plain vs composed heads (--compose none, additive, projected, projected-residual, auto), seeds 0-2, multihead, on DATA: runs/compose/compose.md
	$(BIN)/python -m report.experiments.compose --data $(DATA) --out runs/compose --num-images $(NUM_IMAGES) \
	  --holdout-combos $(HOLDOUT) --epochs $(EPOCHS) --image-size $(IMAGE_SIZE) --seeds 0,1,2

test: $(STAMP) $(LEGACY_STAMP) $(MEDIAPIPE_STAMP) setup-system test-pi ## every test: slow, tflite-runtime 2.14, MediaPipe and emulated Raspberry Pi ones
	POLYHEAD_REQUIRE_LEGACY=1 POLYHEAD_REQUIRE_MEDIAPIPE=1 POLYHEAD_REQUIRE_PI=1 POLYHEAD_REQUIRE_BROWSER=1 POLYHEAD_REQUIRE_FFMPEG=1 $(BIN)/python -m pytest --ignore=tests/pi $(PYTEST_ARGS)

# The Debian packages the tests need, each with its reason: tests/system_packages.py (one list).
# Root only; not root, it says so and changes nothing. See docs/raspberry-pi.md.
setup-system: ## apt-get install the Debian packages the tests need (tests/system_packages.py list) if missing
	$(PY) tests/system_packages.py install

setup-pi: ## apt-get install the Pi roots' host packages (mmdebstrap, arch-test, qemu-user-static, ...) if missing; enable binfmt_misc
	$(PY) tests/pi/piroot.py setup-host

test-pi: $(STAMP) $(LEGACY_STAMP) setup-pi ## the edge package on emulated Raspberry Pi OS (arm64, armhf; both runtimes)
	POLYHEAD_REQUIRE_LEGACY=1 POLYHEAD_REQUIRE_PI=1 $(BIN)/python -m pytest tests/pi $(PYTEST_ARGS)

# Not part of `make test`: 30-60 min, root only. Run it after changing an install step (docs/development.md).
test-fresh: ## the README's two commands (make all, CI=true make test) in a clean Debian root, repository at REF
	$(PY) tests/fresh/fresh_root.py --ref $(REF)

test-fast: $(STAMP) ## the fast tests only
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

clean: ## remove environments, generated data, runs and caches
	rm -rf $(VENV) $(LEGACY) $(MEDIAPIPE) data runs build bench/results.json .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
