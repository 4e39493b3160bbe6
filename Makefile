# `make demo` and `make test` each do all set-up from a fresh clone.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test browser compiler bench clean

$(STAMP): pyproject.toml constraints.txt | compiler
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@# the C++ dropout op, once per machine (without a compiler dropout runs on numba, same values)
	$(VENV)/bin/regulab build || true
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/regulab study

# The C++ dropout op is built with the system's C++ compiler; install Debian's g++ when missing.
compiler:
	@command -v $${CXX:-c++} >/dev/null 2>&1 || { \
	  echo "installing Debian's g++ for the C++ dropout op"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null) \
	  || echo "warning: no C++ compiler; dropout runs on the numba kernel and the C++ op's tests are skipped"; }

# The report tests render HTML in Debian's chromium; install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: chromium could not be installed; browser tests will be skipped"; }

test: $(STAMP) browser
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b; done

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
