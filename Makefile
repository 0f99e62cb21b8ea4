# Two commands for a fresh machine: `make demo` (the full loop on the PyBullet arm) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEPS_STAMP := $(VENV)/.deps-stamp
MSG_STAMP := $(VENV)/.msgs-stamp
export AMENT_PREFIX_PATH := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install demo test bench clean

$(DEPS_STAMP): requirements.txt requirements-ros.txt requirements-test.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -r requirements-ros.txt -r requirements-test.txt
	$(PIP) install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	touch $@

# Messages in msg/ generated for real with rosidl (CMake), plus node executables, launch, config and models
# installed into the venv as colcon would into an install space.
$(MSG_STAMP): $(DEPS_STAMP) CMakeLists.txt package.xml $(wildcard msg/*.msg) $(wildcard scripts/*) $(wildcard launch/*) $(wildcard config/*)
	cmake -S . -B build -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) -DCMAKE_PREFIX_PATH=$(abspath $(VENV)) \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) -DBUILD_TESTING=OFF -DTDMPC_INSTALL_PYTHON=OFF > build.log 2>&1 \
	  && cmake --build build -j2 >> build.log 2>&1 && cmake --install build >> build.log 2>&1 \
	  || (tail -40 build.log; exit 1)
	touch $@

install: $(MSG_STAMP)

demo: install
	$(VENV)/bin/tdmpc-ros demo

test: install
	$(PY) -m pytest -q test

clean:
	rm -rf build build.log $(VENV)
