# edgeprune: `make test` sets up everything on a fresh machine and runs every test;
# `make demo` runs the main job on built-in defaults. Both are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
JOBS   ?= 2
QEMU_CPUS := cortex-a57 cortex-a72 cortex-a76 neoverse-n1
SYSTEM_PACKAGES := g++-aarch64-linux-gnu qemu-user libgtest-dev clang-format-14
CSRC := $(shell find csrc -type f 2>/dev/null) CMakeLists.txt pyproject.toml

.PHONY: test demo setup system-deps venv install lint pytest cpp cpp-native cpp-arm bench clean

test: setup lint pytest cpp
	@echo "make test: lint, pytest, native ctest and aarch64 ctest under qemu ($(QEMU_CPUS)) all passed"

setup: system-deps install

# Debian packages for the C++ tests and the aarch64 cross build. As root we install them;
# otherwise we say exactly which are missing and stop.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing -- run: sudo apt-get install -y$$missing" >&2; exit 2; \
	  fi; \
	fi

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned, so pip takes the CPU wheel and never a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install scikit-build-core pybind11 cmake ninja pytest scipy scikit-learn \
	  numpy rich onnx onnxruntime onnxscript matplotlib ruff==0.17.6
	touch $@

venv: $(VENV)/.deps

# Editable install of the package and its compiled core; redone when C++ sources change.
$(VENV)/.installed: $(VENV)/.deps $(CSRC)
	$(PIP) install --no-build-isolation -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Style is checked, never rewritten here: `ruff format .` and `clang-format-14 -i` fix it locally.
C_SOURCES = $(shell git ls-files 'csrc/*.cpp' 'csrc/*.h' 'csrc/*.c' 'csrc/*.inc' 'tests/cpp/*.cpp' 'tests/cpp/*.c' 'examples/*.c' 'examples/*.cpp' 2>/dev/null)
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	clang-format-14 --dry-run -Werror $(C_SOURCES)

KERNEL_TESTS := tests/python/test_kernels.py tests/python/test_kernels_int8.py tests/python/test_dispatch.py

# The whole suite on the path the dispatcher picks, then the kernel tests again on each forced
# x86 path, so reference and AVX2 stay correct on a host that would pick AVX-512.
pytest: install
	$(PY) -m pytest -q tests
	EDGEPRUNE_ISA=reference $(PY) -m pytest -q $(KERNEL_TESTS)
	EDGEPRUNE_ISA=avx2 $(PY) -m pytest -q $(KERNEL_TESTS)

cpp: cpp-native cpp-arm

cpp-native: system-deps venv
	$(VENV)/bin/cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release \
	  -DEDGEPRUNE_BUILD_TESTS=ON -DEDGEPRUNE_BUILD_PYTHON=OFF >/dev/null
	$(VENV)/bin/cmake --build build/native -j $(JOBS)
	$(VENV)/bin/ctest --test-dir build/native --output-on-failure

# aarch64 cross build, then the same tests under qemu-aarch64 for each device CPU.
cpp-arm: system-deps venv
	$(VENV)/bin/cmake -S . -B build/aarch64 -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_TOOLCHAIN_FILE=targets/toolchains/aarch64-linux-gnu.cmake \
	  -DEDGEPRUNE_BUILD_TESTS=ON -DEDGEPRUNE_BUILD_PYTHON=OFF \
	  -DEDGEPRUNE_QEMU_CPUS="$(QEMU_CPUS)" >/dev/null
	$(VENV)/bin/cmake --build build/aarch64 -j $(JOBS)
	$(VENV)/bin/ctest --test-dir build/aarch64 --output-on-failure

# Speed and accuracy targets live here, never in timed tests. numpy is the kernels' baseline:
# OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (set on some hosts) slow it, so they are unset for that run only.
bench: install
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/kernels.py --json build/bench-kernels.json
	$(PY) benchmarks/models.py --json build/bench-models.json
	$(PY) benchmarks/accuracy.py --json build/bench-accuracy.json
	$(PY) benchmarks/scale.py --json build/bench-scale.json

# The main job on built-in defaults: train the demo CNN on digits, then build it for a Raspberry Pi 4
# (50 % of channels) and a Jetson Orin Nano (a MAC budget met by the adaptive search).
demo: setup
	$(VENV)/bin/edgeprune train --model edgeprune:demo-cnn --data digits --epochs 10 --seed 0 --out demo-out/trained --force
	$(VENV)/bin/edgeprune build --model demo-out/trained --target rpi4 --data digits --ratio 0.5 \
	  --max-acc-drop 2 --out demo-out/rpi4 --force
	$(VENV)/bin/edgeprune build --model demo-out/trained --target jetson-orin-nano --data digits \
	  --budget-macs 0.6 --max-acc-drop 2 --out demo-out/jetson-orin-nano --force

clean:
	rm -rf build demo-out
