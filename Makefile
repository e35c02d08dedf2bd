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

## bench: the routing micro-benchmarks
bench:
	@scripts/ensure-build-deps.sh
	cargo bench --locked -p mockplane-benches

help:
	@grep -E '^## ' Makefile | sed 's/^## //'
