#!/usr/bin/env bash
# Headless Chromium for the browser tests, from Debian's packages (Playwright's own browser
# download cannot work without internet; the tests point Playwright at /usr/bin/chromium).
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "Chromium is missing and apt-get is not available: install chromium by hand" >&2
    exit 1
fi
sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
echo "Installing Chromium from Debian's packages"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq chromium >/dev/null
