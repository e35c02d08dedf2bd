#!/usr/bin/env bash
# Runs Mockplane's whole test suite on this machine: installs what is
# missing, starts PostgreSQL when none runs, checks formatting and lints,
# builds the binaries the end-to-end tests start, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

scripts/ensure-build-deps.sh
DATABASE_URL=$(scripts/ensure-postgres.sh)
case "$DATABASE_URL" in
    postgres://* | postgresql://*) ;;
    *)
        echo "scripts/ensure-postgres.sh gave no postgres:// URL (got: ${DATABASE_URL:0:200})" >&2
        exit 1
        ;;
esac
export DATABASE_URL
log "PostgreSQL for the store tests: ${DATABASE_URL%%@*}@…"

log "checking formatting"
cargo fmt --all --check
log "linting"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "building the binaries the end-to-end tests start"
cargo build --workspace --bins --locked
log "running the tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked
else
    cargo test --workspace --locked
fi
