# Set-up and everyday commands. `make demo` and `make test` each build .venv first when needed.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# The exact tested stack; setup.py itself only states ranges.
PINNED := requirements/pinned.txt
# The prebuilt mmcv wheel (a build cache) sits beside the project on dev and CI machines.
WHEELS := $(wildcard ../shared/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
# mmcv is built against the torch in the venv. --no-cache-dir keeps pip from
# caching (or reusing) a wheel built against another torch: pip keys its
# wheel cache by the source, not by the torch a build linked to.
MMCV_BUILD := MMCV_WITH_OPS=1 MAX_JOBS=$$(nproc)
TOY_CONFIG ?= configs/toy/mask-rcnn_r18-nl-c4_fpn_toy-coco.py
TOY_SEG_CONFIG ?= configs/toy/fcn_r18-d8-nl_toy-cityscapes.py
TOY_WORK_DIR = work_dirs/$(basename $(notdir $(TOY_CONFIG)))
# `make test-compat`: a second environment with another torch (and Python).
TORCH ?= 2.1.2
COMPAT_PYTHON ?= python3.8
COMPAT_VENV ?= .venv-compat/torch$(TORCH)-$(notdir $(COMPAT_PYTHON))
COMPAT_PY := $(COMPAT_VENV)/bin/python
# setuptools 77+ (the pinned stack's) needs Python 3.9+; mmcv's setup.py
# needs pkg_resources (setuptools < 81).
COMPAT_TOOLS ?= "pip>=23.3" "setuptools>=69,<81" wheel ninja

.PHONY: setup demo demo-seg test test-slow test-cuda test-compat lint bench clean-venv

setup: $(STAMP)

$(STAMP): setup.py Makefile $(PINNED)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24" "setuptools>=77.0.3,<81" wheel ninja
	$(PIP) install -c $(PINNED) torch numpy
	# mmcv 2.1.0 with compiled ops: the shared wheel when present, else a source build (~9 min on 2 cores).
	$(MMCV_BUILD) $(PIP) install --no-cache-dir --no-build-isolation $(FIND_LINKS) -c $(PINNED) mmcv
	$(PY) tools/check_env.py
	$(PIP) install --no-build-isolation $(FIND_LINKS) -c $(PINNED) -e ".[all,tests]"
	touch $(STAMP)

demo: setup
	$(PY) tools/train.py $(TOY_CONFIG)
	# Prediction pictures of the trained toy model: its 64 val images, drawn by mmdet's visualisation hook.
	$(PY) tools/test.py $(TOY_CONFIG) $$(cat $(TOY_WORK_DIR)/last_checkpoint) --work-dir $(TOY_WORK_DIR) --show-dir $(TOY_WORK_DIR)/predictions

demo-seg: setup
	$(PY) tools/train.py $(TOY_SEG_CONFIG)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# The CUDA tests (skipped without a GPU) and the CUDA benchmark.
test-cuda: setup
	$(PY) -m pytest -q -m cuda
	$(PY) tools/benchmark.py --device cuda --out benchmark-cuda.md

# The default suite against another torch, built from source (~10 min for
# mmcv on 2 cores), e.g. `make test-compat TORCH=2.1.2 COMPAT_PYTHON=python3.8`.
# Not part of CI.
test-compat:
	test -x $(COMPAT_PY) || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --upgrade $(COMPAT_TOOLS)
	$(COMPAT_PY) -m pip install -c requirements/compat.txt "torch==$(TORCH)" numpy
	$(COMPAT_PY) -c "import mmcv._ext" 2>/dev/null || $(MMCV_BUILD) $(COMPAT_PY) -m pip install --no-cache-dir --no-build-isolation --no-binary mmcv -c requirements/compat.txt "mmcv==2.1.0"
	$(COMPAT_PY) tools/check_env.py
	$(COMPAT_PY) -m pip install --no-build-isolation -c requirements/compat.txt -e ".[all,tests]"
	$(COMPAT_PY) -m pip list --format=freeze | grep -i -E "^(torch|mmcv|mmengine|mmdet|mmsegmentation|numpy)=="
	$(COMPAT_PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(VENV)/bin/vermin --target=3.8- --violations --no-tips --quiet nonlocal_plugin tools tests configs

bench: setup
	$(PY) tools/benchmark.py --runs 3 --out benchmark.md

clean-venv:
	rm -rf $(VENV)
