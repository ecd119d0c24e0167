#!/usr/bin/env bash
# Install what the tests need, then run pytest with the given arguments:
#
#     bash scripts/test.sh                               # the whole suite
#     bash scripts/test.sh tests/test_digest_browser.py -q
#
# Idempotent and quick on a machine that already has everything: Debian's chromium is only
# installed when /usr/bin/chromium is missing (the browser tests drive it through Playwright with
# executable_path=; Playwright's own browser download is never used, it cannot work here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -x /usr/bin/chromium ]]; then
    echo "scripts/test.sh: /usr/bin/chromium is missing, installing Debian's chromium" >&2
    sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends chromium
fi

PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

exec python3 -m pytest "$@"
