#!/usr/bin/env bash
# All of mimic's tests, as CI runs them:
#   1. `cargo test --workspace` (library, CLI end to end, reference parity, resume, bad inputs);
#   2. the page built with `trunk build --release`;
#   3. the browser tests (tests/browser): Debian's chromium, headless, driven by playwright-core,
#      against that build served on 127.0.0.1.
# Installs what 2 and 3 need when it is missing (scripts/setup-web.sh; chromium with apt-get
# when running as root). Screenshots and the page's bench figures land in
# tests/browser/artefacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp() { date +%s; }

t=$(stamp)
cargo test --workspace
echo "test: cargo tests in $(( $(stamp) - t )) s"

t=$(stamp)
bash scripts/setup-web.sh
trunk build --release
echo "test: page built in $(( $(stamp) - t )) s ($(du -sh dist | cut -f1) in dist/)"

if ! [ -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test: installing Debian's chromium"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "test: the browser tests need Debian's chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
fi

t=$(stamp)
cd tests/browser
npm ci --no-audit --no-fund --loglevel=error
npm test
echo "test: browser tests in $(( $(stamp) - t )) s"
