# Every target sets up what it needs: a fresh machine with Python 3.11 is enough.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg setup.py | cksum | cut -d' ' -f1)

VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' provider_gateway/__init__.py)
GIT_SHA := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE ?= provider-gateway

.PHONY: test demo lint bench venv clean docker

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/provider-gateway --log-level warning demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check provider_gateway tests bench
	$(BIN)/ruff format --check provider_gateway tests bench
	$(BIN)/mypy provider_gateway

# The container image, tagged with the package version and <version>-<git sha>; never "latest".
# IMAGE=123456789012.dkr.ecr.us-east-1.amazonaws.com/provider-gateway make docker, then push both tags.
docker:
	@command -v docker >/dev/null || { echo "make docker needs Docker"; exit 1; }
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(GIT_SHA) \
		-t $(IMAGE):$(VERSION) -t $(IMAGE):$(VERSION)-$(GIT_SHA) .
	@echo "built $(IMAGE):$(VERSION) and $(IMAGE):$(VERSION)-$(GIT_SHA)"

# `sam build` of examples/callback-downloader/template.yaml (BuildMethod: makefile) calls
# build-<LogicalId> for each Lambda function: the package and its dependencies, no test extras.
build-%Function:
	$(PYTHON) -m pip install --quiet --no-compile --target "$(ARTIFACTS_DIR)" .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
