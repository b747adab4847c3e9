# odpipe — every target installs what it needs into .venv/ first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MP_VENV := .venv-mediapipe
MP_STAMP := $(MP_VENV)/.installed
DEMO_DIR ?= demo-output
DEMO_FLAGS ?=
REGISTRY ?= us-docker.pkg.dev/YOUR_PROJECT/odpipe
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help setup browser test demo bench lint compile images lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# MediaPipe Tasks (the on-device check of model.tflite) pins absl-py 2.x, which the main stack
# cannot take: it lives in its own venv, used by one test through a subprocess.
$(MP_STAMP): requirements-mediapipe.txt
	@test -x $(MP_VENV)/bin/python || $(PYTHON) -m venv $(MP_VENV)
	$(MP_VENV)/bin/python -m pip install --quiet --no-cache-dir -r requirements-mediapipe.txt
	@touch $(MP_STAMP)

setup: $(STAMP) $(MP_STAMP) browser ## create .venv/ (and .venv-mediapipe/) and install everything (pinned)

# Debian's Chromium opens data_report.html in a test (tests/test_data_report.py); installed where
# root and apt-get are available, never failing the setup (the test skips without it).
browser: ## install Chromium for the data report's headless-browser test, where root and apt-get allow
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium: apt-get could not install it; the data report's browser test will skip"; \
	  else echo "chromium: not installed (needs root and apt-get); the data report's browser test will skip"; fi; }

test: setup ## run the whole test suite (slow tests included)
	$(PY) -m pytest -q -p no:cacheprovider --durations=15; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

demo: setup ## generate sample data and run the whole pipeline locally (DEMO_FLAGS="--steps 200" ...)
	$(PY) -m launch.demo $(DEMO_DIR) $(DEMO_FLAGS)

bench: setup ## benchmarks (records, train input, predict); figures go to the README
	$(PY) -m odpipe.bench

lint: setup ## lint the Dockerfiles
	$(VENV)/bin/hadolint images/*.Dockerfile

compile: setup ## compile the pipeline to pipeline.yaml
	$(VENV)/bin/odpipe compile -o pipeline.yaml --image $(REGISTRY)/odpipe:$(VERSION) --trainer-image $(REGISTRY)/odpipe-gpu:$(VERSION)

images: ## build and push the component images (needs Docker; REGISTRY=...)
	docker build -f images/cpu.Dockerfile -t $(REGISTRY)/odpipe:$(VERSION) .
	docker build -f images/gpu.Dockerfile -t $(REGISTRY)/odpipe-gpu:$(VERSION) .
	docker push $(REGISTRY)/odpipe:$(VERSION)
	docker push $(REGISTRY)/odpipe-gpu:$(VERSION)

lock: ## re-resolve and freeze requirements.lock
	rm -rf /tmp/odpipe-lock && $(PYTHON) -m venv /tmp/odpipe-lock
	/tmp/odpipe-lock/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt
	( head -2 requirements.lock; /tmp/odpipe-lock/bin/pip freeze | sort -f ) > requirements.lock.new && mv requirements.lock.new requirements.lock

clean: ## remove the venv and outputs
	rm -rf $(VENV) $(MP_VENV) $(DEMO_DIR) bench-output pipeline.yaml
