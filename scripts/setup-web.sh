#!/usr/bin/env bash
# Installs what `trunk serve` / `trunk build` need to build the page, without letting trunk
# download anything: the wasm32 target, trunk 0.21.14 (0.22 needs a newer rustc) and the
# wasm-bindgen CLI at exactly the version Cargo.lock pins. Each is skipped when already there.
# wasm-opt is not needed: index.html turns it off (see README.md, "The page").
set -euo pipefail
cd "$(dirname "$0")/.."

TRUNK_VERSION=0.21.14
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' \
    Cargo.lock)
if [ -z "$bindgen_version" ]; then
    echo "setup-web: cannot find the wasm-bindgen version in Cargo.lock" >&2
    exit 1
fi

rustup target add wasm32-unknown-unknown

if [ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]; then
    echo "setup-web: installing trunk $TRUNK_VERSION (about 6 minutes on 2 cores)"
    # trunk's own release profile asks for fat LTO in one codegen unit (about 15 minutes
    # here); a tool that copies files and runs wasm-bindgen does not need it.
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install trunk --version "$TRUNK_VERSION" --locked
fi

if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $bindgen_version" ]; then
    echo "setup-web: installing wasm-bindgen-cli $bindgen_version (about 6 minutes)"
    # Not --locked: its own lock file pins a crate version the registry may lack.
    cargo install wasm-bindgen-cli --version "$bindgen_version" --force
fi

if ! grep -q "wasm_bindgen = \"$bindgen_version\"" Trunk.toml; then
    echo "setup-web: Trunk.toml's [tools] wasm_bindgen is not Cargo.lock's $bindgen_version" >&2
    exit 1
fi
echo "setup-web: ready; run \`trunk serve\` here and open http://127.0.0.1:8080"
