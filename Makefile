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

# The whole study on the built-in synthetic benchmark (CPU preset): prints the results table,
# writes runs/demo/report.html.
demo: $(STAMP)
	$(VENV)/bin/i2iuda run --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
