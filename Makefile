# virtio-lab. `make` sets up, builds and runs the demo case; `make test` runs every test.
CARGO ?= cargo
GUEST_TARGET := x86_64-unknown-none
VLAB := target/release/vlab
DEMO_IN := testcases/basic/io-ntp/in.pcap
DEMO_OUT := target/demo-out.pcap

# The static vlab that runs inside the Linux VM (scripts/linux-vm) for the vhost-kernel tests.
VM_TARGET := x86_64-unknown-linux-gnu

.PHONY: all setup build images vm-vlab demo test lint bench determinism clean fuzz

all: setup build demo

setup:
	scripts/setup

images:
	$(CARGO) build --release -p pmd-guest --target $(GUEST_TARGET)

build: images
	$(CARGO) build --release -p vmm

vm-vlab:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p vmm --target $(VM_TARGET)

# One real case on the KVM machine: a Wireshark sample capture through the guest's PMD and
# back, byte for byte; then the output, decoded.
demo: build
	$(VLAB) run --mode io --pcap-in $(DEMO_IN) --pcap-out $(DEMO_OUT)
	$(VLAB) pcap show $(DEMO_OUT)

test: setup build vm-vlab
	$(CARGO) test --workspace
	$(VLAB) test testcases --junit target/vlab-test.xml --json target/vlab-test.json
	$(MAKE) lint

lint:
	scripts/module-cycles
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p pmd-guest --release --target $(GUEST_TARGET) -- -D warnings

# The same case 100 times on each machine: one output.
determinism: build
	scripts/determinism

bench:
	scripts/setup
	$(MAKE) build
	scripts/bench

clean:
	$(CARGO) clean

# The mutation fuzzer: a million mutated hostile-driver scenarios against the device, each
# checked as the property tests check theirs (device-model/examples/fuzz_rings.rs). Prints
# how many ran and how many failed; `--run N --show` replays one.
FUZZ_RUNS ?= 1000000
FUZZ_SEED ?= 1
fuzz:
	$(CARGO) run --release -p device-model --example fuzz_rings -- --runs $(FUZZ_RUNS) --seed $(FUZZ_SEED)
