# meSimp Lab. Two commands on a fresh clone:
#   make lab    set up .venv (once) and open JupyterLab on the first notebook
#   make test   set up .venv (once) and run every test, notebooks included
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the stamp changes when the dependency pins change, so a second `make` installs nothing
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
export OMP_NUM_THREADS ?= 1
export PLOTLY_RENDERER ?= plotly_mimetype
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
LAB_ARGS ?=
ifeq ($(shell id -u),0)
  LAB_ARGS += --allow-root
endif

.PHONY: setup lab test test-unit test-notebooks kernels bench results results-quick clean help
# the browser tests, the standalone app and the docs pictures need the `ui` extra on top
UI_STAMP := $(VENV)/.ui-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
APP_PORT ?= 8866
.PHONY: test-ui app docs site
help:
	@echo "make lab | make test | make bench | make results | make clean | make app | make site | make test-ui"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing torch==2.13.0 first (CPU wheel), then mesimp_lib with its notebook and test extras"
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[notebook,test]"
	@rm -f $(VENV)/.installed-*
	@touch $@

# rooted at the repository (README, benchmarks/ and data/ reachable), 00 open; a path given
# as an argument would root Lab at that path's folder instead
lab: setup kernels
	@echo "JupyterLab on 127.0.0.1 with its normal token (open the URL it prints)"
	$(BIN)/jupyter lab --ip=127.0.0.1 --ServerApp.open_browser=True --ServerApp.root_dir="$(CURDIR)" \
	    --LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb $(LAB_ARGS)

test: setup test-unit test-notebooks

test-unit: setup
	$(BIN)/python -m pytest -q tests

# build the native meProp kernels once (about 25 s, cached per checkout) before anything uses them, and
# say which backward the default kernel="auto" takes here: the notebooks' stored outputs were made with them
kernels: setup
	@$(BIN)/python -c "from mesimp_lib.fused import status; print('meProp backward (kernel=auto):', status())"

test-notebooks: setup kernels
	$(BIN)/nbstripout --verify --keep-output --keep-count $(NOTEBOOKS)
	$(BIN)/python -m pytest -q --nbval --nbval-current-env \
	    --nbval-sanitize-with notebooks/sanitize.cfg $(NOTEBOOKS)

# the backward-speed benchmark; the conservative allocator setting of PERFORMANCE.md
bench: setup
	MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 \
	    $(BIN)/python -m mesimp_lib bench --json benchmarks/results.json --markdown benchmarks/RESULTS.md

# re-run every stored experiment that is missing (finished runs are kept), then the tables
results: setup
	$(BIN)/python -m mesimp_lib experiment all --jobs 2
	$(BIN)/python -m mesimp_lib summarize --readme README.md

# re-compute the quick entries and check they equal the stored ones (under a minute)
results-quick: setup
	$(BIN)/python -m mesimp_lib experiment quick --verify

$(UI_STAMP): $(STAMP)
	@echo "installing the ui extra (playwright, voila, kaleido) into $(VENV)"
	$(PIP) install -e ".[notebook,test,ui]"
	@rm -f $(VENV)/.ui-installed-*
	@touch $@

# every notebook with a widget run in JupyterLab in Debian's chromium, and the Voila app
# (skips, saying why, without /usr/bin/chromium: `apt-get install -y chromium`)
test-ui: $(UI_STAMP)
	$(BIN)/python -m pytest -q -rsx tests_ui

# the widgets as a standalone web app (Voila, code hidden) on http://127.0.0.1:$(APP_PORT)/ with
# a random token (the URL is printed), kernels freed when a tab closes or after 10 idle minutes,
# at most 6 pages at once; APP_ARGS="--no-token" is the local-only choice (docs/README.md)
APP_ARGS ?=
app: $(UI_STAMP)
	$(BIN)/python -m mesimp_lib.viz.appserver --port $(APP_PORT) $(APP_ARGS)

# the whole course as static HTML from the stored outputs: build/site/index.html (the figures and
# the sliders of the apps' stored-run figures work without Python or a network)
site: setup
	$(BIN)/python -m mesimp_lib.viz.site build/site
	@echo "open build/site/index.html"

# docs/active_paths.png and docs/layer_shrinkage.png (plotly + kaleido in Debian's chromium)
docs: $(UI_STAMP)
	$(BIN)/python -m mesimp_lib.viz.export docs

clean:
	rm -rf $(VENV) build *.egg-info mesimp_lib.egg-info
