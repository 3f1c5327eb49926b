# ftpair: thin wrapper over meson. Every entry point installs missing packages first.
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
GUEST_BUILD ?= build-guest
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?=
ONLY ?=
MESON_TEST_ARGS ?=

.PHONY: all deps build guest-build test test-unit test-lab test-sanitize test-asan test-tsan fuzz fuzz-smoke bench soak demo clean lab-down

all: build

deps:
	@tools/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# ftpaird for the TCG test guests (tests/virt/test_virt_reprotect.py): TCG has no AVX-512, so
# this build targets x86-64-v2 instead of the host (-march=native).
$(GUEST_BUILD)/build.ninja:
	meson setup $(GUEST_BUILD) -Dmarch=x86-64-v2 -Dtests=false -Dbenchmarks=false

guest-build: deps $(GUEST_BUILD)/build.ninja
	ninja -C $(GUEST_BUILD) control/ftpaird

# Every test: unit, lab integration, virt. Prints "N passed, M failed" last.
test: build guest-build
	@tools/run-tests.sh $(BUILD) $(MESON_TEST_ARGS)

test-unit: build
	@tools/run-tests.sh $(BUILD) --suite unit

test-lab: build
	@tools/run-tests.sh $(BUILD) --suite lab

# Unit tests under ASan+UBSan, then the multi-threaded control-plane tests (checkpoint with
# replication over loopback gRPC, control, failover) under TSan.
# Only the test binaries are built (no daemon, benchmarks or tools). Suppressions, each
# justified: tools/sanitizers/*.supp.
SAN_SUPP := $(CURDIR)/tools/sanitizers
# ASan+UBSan: every test of the unit suite (each folder's tests/test_<name>; ipfix_collector is
# a script that drives tests/lab/ipfix-send).
UNIT_TEST_BINS = $$(meson test -C $(1) --no-rebuild --list --suite unit 2>/dev/null | \
  sed -n 's|.*unit / ipfix_collector$$|tests/lab/ipfix-send|p; s|.*unit / |tests/test_|p')
TSAN_TESTS := tests/test_checkpoint tests/test_control tests/test_failover tests/test_shards
test-sanitize: test-asan test-tsan

test-asan: deps
	@[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Dbenchmarks=false
	ninja -C $(ASAN_BUILD) -j2 $(call UNIT_TEST_BINS,$(ASAN_BUILD))
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$(SAN_SUPP)/ubsan.supp \
	  tools/run-tests.sh $(ASAN_BUILD) --no-rebuild --suite unit

# ignore_noninstrumented_modules: memcpy/new/delete called from inside the uninstrumented
# gRPC, abseil and protobuf libraries are theirs to order, not ours (see tsan.supp).
test-tsan: deps
	@[ -f $(TSAN_BUILD)/build.ninja ] || meson setup $(TSAN_BUILD) -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug -Dbenchmarks=false
	ninja -C $(TSAN_BUILD) -j2 $(TSAN_TESTS)
	@TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$(SAN_SUPP)/tsan.supp \
	  tools/run-tests.sh $(TSAN_BUILD) --no-rebuild --suite unit checkpoint control failover shards

# libFuzzer targets (clang, ASan+UBSan) on copies of fuzz/corpus: `make fuzz` runs each
# for FUZZ_SECONDS (default 300), `make fuzz-smoke` for 30 s (CI). FUZZ_TARGETS picks some.
fuzz: deps
	@tools/run-fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: deps
	@tools/run-fuzz.sh $(FUZZ_BUILD) 30 $(FUZZ_TARGETS)

bench: build guest-build
	@tools/bench/run.sh $(BUILD) $(ONLY)

# Soak of the pair lab (not in CI, not in `make test`): first the steady pair of lab_steady for
# STEADY_SECONDS (default 5 min; 20 s in `make test`): no spurious failover, no connection lost;
# then mixed traffic, a switchover or a kill of the active every minute, RSS/fd/thread and
# flow-table checks (tools/soak/soak.py), SOAK_SECONDS of traffic (default 12 min); figures
# appended to $(BUILD)/bench/results.jsonl.
SOAK_SECONDS ?= 720
STEADY_SECONDS ?= 300
soak: build
	@FTPAIRD=$(abspath $(BUILD))/control/ftpaird FTPAIRCTL=$(abspath $(BUILD))/tools/ftpairctl/ftpairctl \
	  FTPAIR_STEADY_SECONDS=$(STEADY_SECONDS) /usr/bin/python3 tests/lab/test_steady.py
	@FTPAIRD=$(abspath $(BUILD))/control/ftpaird FTPAIRCTL=$(abspath $(BUILD))/tools/ftpairctl/ftpairctl \
	  /usr/bin/python3 tools/soak/soak.py --build $(BUILD) --seconds $(SOAK_SECONDS)

demo: build
	@tools/demo.sh $(BUILD)

lab-down:
	@tools/lab/ftpair-lab down

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
