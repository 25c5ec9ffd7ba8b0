# Superposition course.  The two commands a learner needs:
#   make lab    set up, copy new chapters into your working copy my_work/ (never
#               overwriting yours), then open it in JupyterLab
#   make test   set up, then every check (drift, unit tests, every solutions notebook),
#               in two worker processes (under 25 minutes on a 2-core machine)
#
# Others: make test-full (full-size script reproductions and learner notebooks, ~25 min, not in CI),
# make test-latest (the suite against the newest releases, in build/venv-latest),
# make pins (refresh requirements/constraints.txt from the newest releases).
#
# PYTHON picks the interpreter (e.g. `make test PYTHON=.venv/bin/python`); TORCH_SPEC
# picks the torch to install when none is importable, e.g. a CPU-only wheel:
#   make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
TORCH_SPEC ?= torch
# The exact versions the suite was last proven with (`make pins` writes it).  `make setup`
# installs them; CONSTRAINTS= installs the newest releases the pyproject's lower bounds admit.
CONSTRAINTS ?= requirements/constraints.txt
STAMP := build/.setup.stamp
# Cheap proof that this interpreter has the course installed from THIS checkout (stamps are
# per checkout, not per interpreter, so a new virtual environment is noticed here, and so is
# an editable install that points at another clone, whose code notebooks would otherwise run).
INSTALLED := import importlib.metadata as m, importlib.util as u, os, sys; [m.version(d) for d in ('superposition-course', 'nbval', 'jupytext')]; \
	sys.path[:] = [p for p in sys.path if p not in ('', os.getcwd())]; \
	assert all(os.path.dirname(os.path.dirname(u.find_spec(p).origin)) == os.getcwd() for p in ('course_utils', 'course_tools'))

.PHONY: setup browser sandbox lab test test-full test-latest pins build check doctor benchmark

setup:
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] || [ -n "$(CONSTRAINTS)" -a "$(CONSTRAINTS)" -nt $(STAMP) ] \
			|| ! $(PYTHON) -c "$(INSTALLED)" 2>/dev/null; then \
		set -e; \
		if ! $(PYTHON) -c "import torch" 2>/dev/null; then \
			echo "+ $(PYTHON) -m pip install $(TORCH_SPEC)"; \
			$(PYTHON) -m pip install $(TORCH_SPEC); \
		fi; \
		echo "+ $(PYTHON) -m pip install -q -e \".[dev]\" $(if $(CONSTRAINTS),-c $(CONSTRAINTS))"; \
		$(PYTHON) -m pip install -q -e ".[dev]" $(if $(CONSTRAINTS),-c $(CONSTRAINTS)); \
		mkdir -p build; \
		touch $(STAMP); \
	fi

# Chromium for tests/test_course_browser.py (the chapter widgets in a real browser, driven by the
# playwright package; Playwright's own browser download is not used).  Installed with apt
# when this runs as root or with passwordless sudo (CI runs as root); otherwise this says how
# to install it and the test is skipped with that reason.  CHROMIUM=/path picks a binary.
APT_CHROMIUM := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
browser:
	@if [ -n "$$CHROMIUM" ] && [ -x "$$CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then \
		:; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "note: no chromium and no apt-get: install Chromium (and set CHROMIUM=/path/to/it) to run tests/test_course_browser.py; it is skipped"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "+ $(APT_CHROMIUM)"; \
		( $(APT_CHROMIUM) ) || echo "warning: could not install chromium; tests/test_course_browser.py will be skipped"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		echo "+ sudo sh -c '$(APT_CHROMIUM)'"; \
		sudo sh -c '$(APT_CHROMIUM)' || echo "warning: could not install chromium; tests/test_course_browser.py will be skipped"; \
	else \
		echo "note: chromium is not installed; tests/test_course_browser.py will be skipped. To run it: sudo apt-get install chromium"; \
	fi

# Bubblewrap (`bwrap`) for the grader's sandbox (docs/grading.md): every submission's kernel and
# sandbox run under it, and `python -m course_tools.grade` refuses to run without it unless
# given --no-sandbox.  Installed like chromium; the grader's tests need it.
APT_BWRAP := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap
sandbox:
	@if command -v bwrap >/dev/null 2>&1; then \
		:; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "warning: no bwrap and no apt-get: install bubblewrap for the grader and its tests (tests/test_tools_grade*.py)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "+ $(APT_BWRAP)"; \
		( $(APT_BWRAP) ) || echo "warning: could not install bubblewrap; the grader's tests will fail"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		echo "+ sudo sh -c '$(APT_BWRAP)'"; \
		sudo sh -c '$(APT_BWRAP)' || echo "warning: could not install bubblewrap; the grader's tests will fail"; \
	else \
		echo "warning: bubblewrap is not installed and cannot be installed from here: sudo apt-get install bubblewrap"; \
	fi

lab: setup
	$(PYTHON) -m course_tools.workspace
	$(PYTHON) -m jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) my_work/

# One pytest run, two worker processes (pytest-xdist), one torch thread each.  nbval runs every
# solutions notebook once (its outputs compared with the committed ones); each notebook's cells
# and its chapter's reproduction tests form one xdist group, the notebook first, so the tests
# assert on the models the notebook trained (tests/notebook_results.py) instead of training
# them again.  The notebooks are named explicitly (pytest's `testpaths` does not apply,
# solutions/*.py is never collected); pytest's exit code 5 (nothing collected) fails make.
# build/test-report.xml feeds `python benchmarks/test_times.py` (docs/benchmarks.md).
TEST_WORKERS ?= 2
PYTEST_RUN = SUPERPOSITION_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m pytest -p no:cacheprovider \
	-n $(TEST_WORKERS) --dist loadgroup --durations=25 -o junit_family=xunit1
test: setup browser sandbox
	$(PYTHON) -m course_tools.build --check
	$(PYTEST_RUN) --junitxml=build/test-report.xml -m "not full" --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--ignore=tests/fixtures solutions/*.ipynb tests

# The full-size proofs that scripts/ reproduce the committed artefacts (about 15 minutes of
# training), and the learner notebooks that `make test` runs in smoke mode (every training loop
# capped, SUPERPOSITION_SMOKE_STEPS) run at full size (about 11 minutes more); `make test` runs
# the same code paths on reduced configurations.
test-full: setup
	$(PYTEST_RUN) --junitxml=build/test-full-report.xml -m full tests

# The suite against the newest releases (not in CI): a fresh virtual environment in
# build/venv-latest, no constraints.  A red run here means the pins need care before a refresh.
LATEST_VENV := build/venv-latest
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(MAKE) test PYTHON=$(CURDIR)/$(LATEST_VENV)/bin/python CONSTRAINTS=

# Refresh the pins: the newest releases, installed into a fresh virtual environment, frozen
# (torch is left to TORCH_SPEC; each pin applies to this Python version only).  Then run
# `make test` and commit requirements/constraints.txt with the result.
PINS_VENV := build/venv-pins
pins:
	rm -rf $(PINS_VENV)
	$(PYTHON) -m venv $(PINS_VENV)
	$(PINS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PINS_VENV)/bin/python -m pip install -q $(TORCH_SPEC)
	$(PINS_VENV)/bin/python -m pip install -q -e ".[dev]"
	$(PINS_VENV)/bin/python scripts/freeze_pins.py > requirements/constraints.txt
	@echo "wrote requirements/constraints.txt; now run make test"

build: setup
	$(PYTHON) -m course_tools.build

check: setup
	$(PYTHON) -m course_tools.build --check

doctor:
	$(PYTHON) -m course_tools.doctor

benchmark: setup
	$(PYTHON) benchmarks/toy_models.py
