#!/usr/bin/env bash
# Installs what building Mockplane needs and a fresh Debian machine lacks.
# pingora builds zlib-ng with cmake. Protobuf needs no protoc (protox).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if ! command -v cmake >/dev/null 2>&1; then
    log "installing cmake (pingora builds zlib-ng with it)"
    apt_install cmake
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
