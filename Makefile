VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/lightning-des

.PHONY: install data demo test
install: $(PY)
$(PY):
	VENV=$(VENV) scripts/install.sh

data: install
	$(CLI) data prepare movielens100k

demo: data
	$(CLI) fit --config recipes/deepfm_movielens_des.yaml

test: install
	$(VENV)/bin/python -m pytest -q -x --durations=15 tests
