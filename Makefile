# Set-up and everyday commands. `make demo` and `make test` each build .venv first when needed.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# The prebuilt mmcv wheel (a build cache) sits beside the project on dev and CI machines.
WHEELS := $(wildcard ../shared/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
TOY_CONFIG ?= configs/toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py
TOY_SEG_CONFIG ?= configs/toy/fcn_r18-d8-nl_toy-cityscapes.py

.PHONY: setup demo demo-seg test test-slow lint bench clean-venv

setup: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24" "setuptools>=77.0.3,<81" wheel ninja
	$(PIP) install torch==2.13.0 numpy
	# mmcv 2.1.0 with compiled ops: the shared wheel when present, else a source build (~9 min on 2 cores).
	MMCV_WITH_OPS=1 MAX_JOBS=$$(nproc) $(PIP) install --no-build-isolation $(FIND_LINKS) mmcv==2.1.0
	$(PY) -c "import mmcv.ops, mmcv._ext"
	$(PIP) install --no-build-isolation $(FIND_LINKS) -e ".[tests]"
	touch $(STAMP)

demo: setup
	$(PY) tools/train.py $(TOY_CONFIG)

demo-seg: setup
	$(PY) tools/train.py $(TOY_SEG_CONFIG)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) tools/benchmark.py --out benchmark.md

clean-venv:
	rm -rf $(VENV)
