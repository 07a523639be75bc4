# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mirroralign demo

# pytest exits 5 when it legitimately collects nothing; that is not a failure.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/generation.py

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
