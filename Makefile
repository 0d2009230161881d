# Sleeve: `make run` starts the whole stack on the embedded default (SQLite + ./var/store),
# `make test` runs every test (it starts its own PostgreSQL and S3 servers; no Docker needed).

SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := python3 -m uv
export UV_PYTHON_DOWNLOADS := never

# Offline ImageNet weights from the kit beside the checkout when present, else Keras' download.
KIT_WEIGHTS := ../shared/weights/mobilenet_v2_1.0_224_imagenet_no_top.h5
export SLEEVE_BASE_WEIGHTS ?= $(if $(wildcard $(KIT_WEIGHTS)),$(abspath $(KIT_WEIGHTS)),imagenet)
# The first model `make run` trains when the registry is empty: from the kit's covers when
# they are beside the checkout, else from the iTunes API (the product's own default).
KIT_COVERS := ../shared/datasets/discogs5

.PHONY: install test-deps run test lint fmt check bench bench-score bench-scrape bench-variants

install:  ## Python deps (all services + dev tools) into .venv from uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-packages

run: export SLEEVE_BOOTSTRAP_SOURCE ?= $(if $(wildcard $(KIT_COVERS)),$(abspath $(KIT_COVERS)),itunes)
run: install  ## the API (http://127.0.0.1:8000/) and the workers; trains a first model if none
	$(UV) run --no-sync sleeve run

# The browser test drives Debian's chromium through playwright (executable_path); playwright
# never downloads a browser of its own. Installed once, only where it is missing.
test-deps:  ## Debian's chromium for the upload-page browser test
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "chromium is missing and installing it needs root or sudo: run apt-get install chromium as root" >&2; exit 1; fi; \
	  echo "installing Debian's chromium (apt-get)"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	}

test: install test-deps  ## unit, integration (SQLite, PostgreSQL, S3) and end-to-end tests
	$(UV) run --no-sync pytest

lint: install
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy

fmt: install
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

check: lint test  ## what CI should run once lint is clean

bench: install  ## serving under load (separate load generator) against the in-process limit, a naive server and LitServe
	$(UV) run --no-sync python bench/serve_throughput.py

bench-score: install  ## bulk scoring (local engine on a local and an S3 store, memory at 5k and 50k items, Ray) against the in-process limit
	$(UV) run --no-sync python bench/score_throughput.py

bench-scrape: install  ## scraper against a local Deezer (50 ms answers, 20 requests/s): share of the rate, violations, memory over 5k covers
	$(UV) run --no-sync python bench/scrape_rate.py

bench-variants: install  ## fp32, fp16 and int8 files of a MobileNetV2 classifier: size, test scores, images/s at batch 1 and 32 on this CPU
	$(UV) run --no-sync python bench/variants.py
