VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/lightning-des

.PHONY: install data demo docs test
install: $(VENV)/.installed
$(VENV)/.installed: scripts/install.sh requirements-cpu.txt pyproject.toml
	VENV=$(VENV) scripts/install.sh
	touch $@

data: install
	$(CLI) data prepare movielens100k
	$(CLI) data prepare movielens1m
	$(CLI) data prepare adult

demo: data
	$(CLI) fit --config recipes/deepfm_movielens_des.yaml

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d build/site

test: data docs
	$(VENV)/bin/python -m pytest -q -x --durations=15 tests
