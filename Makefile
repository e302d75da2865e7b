# Two commands do everything on a fresh machine:  make demo   and   make test
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SCENE   ?= data/demo_scene
OUT     ?= out/demo

.PHONY: venv demo test bench clean

IFACES  := $(shell find ros_interfaces -type f 2>/dev/null)

$(STAMP): requirements.lock setup.py setup.cfg package.xml scripts/setup_venv.sh scripts/build_interfaces.sh \
          scripts/install_ament_prefix.sh $(IFACES)
	bash scripts/setup_venv.sh $(PY) $(VENV)
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(VENV) $(SCENE) $(OUT)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q test

bench: $(STAMP)
	bash scripts/bench.sh $(VENV)

clean:
	rm -rf $(VENV) data out .pytest_cache
