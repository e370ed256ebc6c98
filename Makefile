# Thin wrapper: everything real lives in CMake and scripts/.
BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all bootstrap build run stop test test-unit test-asan fuzz format format-check bench clean

all: build

bootstrap:
	@bash scripts/bootstrap

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: bootstrap $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# Start a local cluster on loopback, data under ./var. Stop it with `make stop`.
run: build
	@bash scripts/cluster start

stop:
	@bash scripts/cluster stop

# The whole suite: unit + integration tests, then a bounded fuzz run.
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600
	$(MAKE) fuzz

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

# Unit tests under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: bootstrap
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DSTRATA_SANITIZE=ON $(CMAKE_ARGS)
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	cd $(BUILD_ASAN) && ctest --output-on-failure -j $(JOBS) -L unit
	@# Daemons under ASan+UBSan, driven by real clients and by bad input. Leak checking is off
	@# for them: they exit without tearing every connection down (UB and memory errors abort).
	@# Fewer rounds of the crash and shutdown loops than `make test` runs, for CI's time.
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=0 SHUTDOWN_ROUNDS=1 ROUNDS=20 ctest --output-on-failure -R \
		'integration/test_(nbd_protocol|nbd_qemu|iscsi_tools|iscsi_pr_multi|blockd_enospc|blockd_crash|blockd_wire|snapshot_live|dist_failover|dist_growth|dist_pipeline|dist_primary_full|dist_shutdown|blockd_fs_full|meta_fs_full)$$'

# Build the libFuzzer targets with clang and run each for FUZZ_SECONDS, FUZZ_JOBS at once (all
# four by default: each still runs FUZZ_SECONDS, on a share of the CPUs, and CI waits 30 s for
# the lot instead of 60).
FUZZ_SECONDS ?= 30
FUZZ_JOBS ?= 4
fuzz: bootstrap
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DSTRATA_FUZZ=ON -DBUILD_TESTING=ON
	cmake --build $(BUILD_FUZZ) -j $(JOBS) --target fuzzers
	FUZZ_JOBS=$(FUZZ_JOBS) bash scripts/run-fuzzers $(BUILD_FUZZ)/fuzz $(FUZZ_SECONDS)

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i

format-check:
	git ls-files '*.c' '*.h' | xargs clang-format --dry-run -Werror

bench: build
	bash bench/run.sh

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
