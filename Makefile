# The two commands the README promises, each doing its own set-up in ./.venv:
#   make serve   run the server on the embedded SQLite store (no database to install), SMART
#                authorization on (register apps and users with `python -m fhir_server clients|users`)
#   make test    run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/python -m fhir_server serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/rest_throughput.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
