# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv if it is missing and install the pinned dependencies first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Until the study command exists: generate the built-in benchmark, picture it, check both domains.
demo: $(STAMP)
	$(VENV)/bin/i2iuda synth --out runs/demo/synthetic --preview
	$(VENV)/bin/i2iuda data check synthetic:runs/demo/synthetic:source
	$(VENV)/bin/i2iuda data check synthetic:runs/demo/synthetic:target-val

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
