#!/usr/bin/env bash
# Installs what the benchmarks need on a fresh Debian machine: wrk (load
# generator), nginx (the ceiling), Java and Node.js (to run the peers), and
# the peers themselves from npm (WireMock's standalone jar, Mockoon CLI),
# pinned by benches/peers/package-lock.json, into target/bench-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

scripts/ensure-build-deps.sh
packages=()
command -v wrk >/dev/null 2>&1 || packages+=(wrk)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || packages+=(nginx)
command -v java >/dev/null 2>&1 || packages+=(openjdk-17-jre-headless)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
if [ ${#packages[@]} -gt 0 ]; then
    log "installing ${packages[*]}"
    apt_install "${packages[@]}"
fi

tools=target/bench-tools
mkdir -p "$tools"
if ! cmp -s benches/peers/package-lock.json "$tools/package-lock.json" || [ ! -d "$tools/node_modules" ]; then
    log "installing the peers (WireMock, Mockoon CLI) from npm"
    cp benches/peers/package.json benches/peers/package-lock.json "$tools/"
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
fi
