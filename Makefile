# The two commands of the README:
#   make demo   set up, build, and train a tiny random Qwen3 on the demo data set (CPU, or GPU if present)
#   make test   set up, build, and run every test (C++ unit tests + reference tests against transformers/peft)
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: setup configure build test demo clean

setup:
	./launch/setup.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 2400

demo: build
	./launch/demo.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR)
