# Superposition course.  The two commands a learner needs:
#   make lab    set up, copy new chapters into your working copy my_work/ (never
#               overwriting yours), then open it in JupyterLab
#   make test   set up, then every check (drift, unit tests, every solutions notebook)
#
# PYTHON picks the interpreter (e.g. `make test PYTHON=.venv/bin/python`); TORCH_SPEC
# picks the torch to install when none is importable, e.g. a CPU-only wheel:
#   make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
TORCH_SPEC ?= torch
STAMP := build/.setup.stamp
# Cheap proof that this interpreter has the course installed from THIS checkout (stamps are
# per checkout, not per interpreter, so a new virtual environment is noticed here, and so is
# an editable install that points at another clone, whose code notebooks would otherwise run).
INSTALLED := import importlib.metadata as m, importlib.util as u, os, sys; [m.version(d) for d in ('superposition-course', 'nbval', 'jupytext')]; \
	sys.path[:] = [p for p in sys.path if p not in ('', os.getcwd())]; \
	assert os.path.dirname(os.path.dirname(u.find_spec('course_utils').origin)) == os.getcwd()

.PHONY: setup browser lab test build check doctor benchmark

setup:
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] || ! $(PYTHON) -c "$(INSTALLED)" 2>/dev/null; then \
		set -e; \
		if ! $(PYTHON) -c "import torch" 2>/dev/null; then \
			echo "+ $(PYTHON) -m pip install $(TORCH_SPEC)"; \
			$(PYTHON) -m pip install $(TORCH_SPEC); \
		fi; \
		echo "+ $(PYTHON) -m pip install -q -e \".[dev]\""; \
		$(PYTHON) -m pip install -q -e ".[dev]"; \
		mkdir -p build; \
		touch $(STAMP); \
	fi

# Chromium for tests/test_browser.py (the chapter widgets in a real browser, driven by the
# playwright package; Playwright's own browser download is not used).  Installed with apt
# when this runs as root or with passwordless sudo (CI runs as root); otherwise this says how
# to install it and the test is skipped with that reason.  CHROMIUM=/path picks a binary.
APT_CHROMIUM := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
browser:
	@if [ -n "$$CHROMIUM" ] && [ -x "$$CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then \
		:; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "note: no chromium and no apt-get: install Chromium (and set CHROMIUM=/path/to/it) to run tests/test_browser.py; it is skipped"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "+ $(APT_CHROMIUM)"; \
		( $(APT_CHROMIUM) ) || echo "warning: could not install chromium; tests/test_browser.py will be skipped"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		echo "+ sudo sh -c '$(APT_CHROMIUM)'"; \
		sudo sh -c '$(APT_CHROMIUM)' || echo "warning: could not install chromium; tests/test_browser.py will be skipped"; \
	else \
		echo "note: chromium is not installed; tests/test_browser.py will be skipped. To run it: sudo apt-get install chromium"; \
	fi

lab: setup
	$(PYTHON) -m course_utils.workspace
	$(PYTHON) -m jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) my_work/

# The nbval step names the notebooks explicitly: pytest's `testpaths = ["tests"]` does not
# apply, solutions/*.py is never collected, and with no notebooks at all pytest fails
# ("file or directory not found") instead of passing silently.
test: setup browser
	$(PYTHON) -m course_utils.build --check
	$(PYTHON) -m pytest tests
	$(PYTHON) -m pytest --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
		-p no:cacheprovider solutions/*.ipynb

build: setup
	$(PYTHON) -m course_utils.build

check: setup
	$(PYTHON) -m course_utils.build --check

doctor:
	$(PYTHON) -m course_utils.doctor

benchmark: setup
	$(PYTHON) benchmarks/toy_models.py
