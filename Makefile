# ftpair: thin wrapper over meson. Every entry point installs missing packages first.
BUILD ?= build
ASAN_BUILD ?= build-asan
ONLY ?=
MESON_TEST_ARGS ?=

.PHONY: all deps build test test-unit test-lab test-sanitize bench demo clean lab-down

all: build

deps:
	@tools/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Every test: unit, lab integration. Prints "N passed, M failed" last.
test: build
	@tools/run-tests.sh $(BUILD) $(MESON_TEST_ARGS)

test-unit: build
	@tools/run-tests.sh $(BUILD) --suite unit

test-lab: build
	@tools/run-tests.sh $(BUILD) --suite lab

# Unit tests under ASan+UBSan.
test-sanitize: deps
	@[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
	ninja -C $(ASAN_BUILD)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  tools/run-tests.sh $(ASAN_BUILD) --suite unit

bench: build
	@tools/bench/run.sh $(BUILD) $(ONLY)

demo: build
	@tools/demo.sh $(BUILD)

lab-down:
	@tools/lab/ftpair-lab down

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
