# make demo: the embedded default job (synthetic data, no downloads).  make test: the test suite.
# Both set up .venv on first use (torch + torchvision pinned by constraints.txt, ~5 GB, a few minutes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test benchmark clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/talkinghead demo --out demo_output

test: install
	$(BIN)/pytest

benchmark: install
	$(BIN)/python benchmarks/synth_speed.py

clean:
	rm -rf $(VENV) demo_output build *.egg-info
