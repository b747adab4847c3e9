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
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' odpipe/__init__.py)
# Images: tagged VERSION and VERSION-GITSHA (-dirty when the work tree has uncommitted changes),
# under REGISTRY/ when REGISTRY is given (then also pushed); `make compile` uses the same tag.
REGISTRY ?=
GIT_SHA := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo nogit)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
IMAGE_TAG ?= $(VERSION)-$(GIT_SHA)
IMAGE_PREFIX := $(if $(REGISTRY),$(REGISTRY)/,)
IMAGE ?= $(IMAGE_PREFIX)odpipe:$(IMAGE_TAG)
TRAINER_IMAGE ?= $(IMAGE_PREFIX)odpipe-gpu:$(IMAGE_TAG)
# Docker and stand-in base images on a development machine without registry access.
CONTAINER_ENV ?= ../shared/tools/container-env.sh
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help setup browser test demo bench lint compile images test-images lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@# the KFP front end (launch/, pipelines/, components/) is used from this checkout, not installed
	$(PY) -c "import os, sysconfig; open(os.path.join(sysconfig.get_paths()['purelib'], 'odpipe-checkout.pth'), 'w').write(os.getcwd() + '\n')"
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
	$(PY) -m pytest -q -p no:cacheprovider -m 'not docker' --durations=15; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

demo: setup ## generate sample data and run the whole pipeline locally (DEMO_FLAGS="--steps 200" ...)
	$(PY) -m launch.demo $(DEMO_DIR) $(DEMO_FLAGS)

bench: setup ## benchmarks (records, train input, steps/s, quality per minute before/after, predict, serve; ~2 h); figures go to the README
	$(PY) -m odpipe.bench

lint: setup ## lint the Python code (ruff) and the Dockerfiles (hadolint)
	$(VENV)/bin/ruff check odpipe components pipelines launch tests
	$(VENV)/bin/hadolint images/*.Dockerfile

compile: setup ## compile the pipeline to pipeline.yaml for the images of `make images` (same REGISTRY)
	$(VENV)/bin/odpipe compile -o pipeline.yaml --image $(IMAGE) --trainer-image $(TRAINER_IMAGE)

images: ## build the component images (needs Docker); REGISTRY=... also pushes them
	docker build -f images/cpu.Dockerfile --build-arg VERSION=$(VERSION) --label org.opencontainers.image.revision=$(GIT_SHA) \
	  -t $(IMAGE_PREFIX)odpipe:$(VERSION) -t $(IMAGE) .
	docker build -f images/gpu.Dockerfile --build-arg VERSION=$(VERSION) --label org.opencontainers.image.revision=$(GIT_SHA) \
	  -t $(IMAGE_PREFIX)odpipe-gpu:$(VERSION) -t $(TRAINER_IMAGE) .
	@if [ -n "$(REGISTRY)" ]; then set -e; for t in $(IMAGE_PREFIX)odpipe:$(VERSION) $(IMAGE) \
	  $(IMAGE_PREFIX)odpipe-gpu:$(VERSION) $(TRAINER_IMAGE); do docker push $$t; done; fi
	@echo "images: $(IMAGE) $(TRAINER_IMAGE) (and :$(VERSION)); pipeline for them: make compile$(if $(REGISTRY), REGISTRY=$(REGISTRY),)"

test-images: $(STAMP) ## build the images; run the pipeline and odpipe serve in them (Docker; minutes)
	bash $(CONTAINER_ENV)
	$(MAKE) images REGISTRY=
	$(PY) -m pytest -q -p no:cacheprovider -m docker tests/test_docker_run.py tests/test_serve_container.py

lock: ## re-resolve and freeze requirements.lock
	rm -rf /tmp/odpipe-lock && $(PYTHON) -m venv /tmp/odpipe-lock
	/tmp/odpipe-lock/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt
	( head -2 requirements.lock; /tmp/odpipe-lock/bin/pip freeze | sort -f ) > requirements.lock.new && mv requirements.lock.new requirements.lock

clean: ## remove the venv and outputs
	rm -rf $(VENV) $(MP_VENV) $(DEMO_DIR) bench-output pipeline.yaml
