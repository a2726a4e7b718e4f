# The two commands of the README:  make demo  |  make test
# Each creates .venv with Python 3.11 and installs the pinned requirements on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CKPT ?= checkpoints/cifar10-cpu-cond.safetensors
FACES ?= checkpoints/celeba64-cpu.safetensors

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --no-cache-dir --upgrade pip
	$(VENV)/bin/pip install -q --no-cache-dir -r requirements.txt
	touch $@

$(VENV)/.test: requirements-test.txt requirements-docs.txt $(VENV)/.runtime
	$(VENV)/bin/pip install -q --no-cache-dir -r requirements-test.txt
	touch $@

.PHONY: demo test test-fast bench figures clean
demo: $(VENV)/.runtime
	$(PY) -m bench.demo --ckpt $(CKPT) --faces-ckpt $(FACES) --out out/demo

# pytest exits 5 when it collects no tests: that is a failure here, never a silent pass.
test: $(VENV)/.test
	@$(PY) -m pytest -q -ra tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

test-fast: $(VENV)/.test
	$(PY) -m pytest -q -m "not slow" tests

$(VENV)/.docs: requirements-docs.txt $(VENV)/.runtime
	$(VENV)/bin/pip install -q --no-cache-dir -r requirements-docs.txt
	touch $@

figures: $(VENV)/.docs
	$(PY) -m bench.figures --ckpt $(CKPT) --out docs/figures
	$(PY) -m bench.curves --out docs/figures/training_curves.png

clean:
	rm -rf $(VENV) out .pytest_cache
