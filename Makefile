# The two commands a fresh machine needs: `make run` and `make test`.

.PHONY: run test build bench help

## run: build and start a local Mockplane (control plane on SQLite + one node)
run:
	@scripts/ensure-build-deps.sh
	cargo build --release --locked --bins
	target/release/mockplane up

## test: the whole suite (installs cmake, starts PostgreSQL, fmt, clippy, tests)
test:
	@scripts/test.sh

## build: debug build of every binary
build:
	@scripts/ensure-build-deps.sh
	cargo build --locked --bins

## bench: every benchmark (routing, load against peers, delays and chaos, propagation); installs what it needs
bench:
	@scripts/ensure-bench-deps.sh
	cargo build --release --locked --bins
	cargo bench --locked -p mockplane-benches --bench routing --bench documents
	target/release/mockplane-bench all

help:
	@grep -E '^## ' Makefile | sed 's/^## //'
