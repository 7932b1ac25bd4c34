#!/usr/bin/env bash
# Build llama.cpp's `llama-server` binary from the llama.cpp sources vendored in the
# llama-cpp-python sdist of the pinned version (the same sources as the Python wheel), with the
# same safe CPU flags (scripts/llama_cpp_flags.sh), and install it as PYTHON's prefix/bin/llama-server.
#
# The binary is cached under ~/.cache/serverless-llm-arena/llama-server/<version>-<key>, the key
# a hash of the version and every CMake argument, so other flags always mean another build. Only
# what the server needs is built: `--target llama-server`, static libraries, no tests, examples,
# web UI (no npm, no download), or OpenSSL (it never fetches anything: the service gives it a
# local GGUF path).
#
# Usage: scripts/build_llama_server.sh PYTHON VERSION
#        scripts/build_llama_server.sh --print-key VERSION
set -euo pipefail

python_bin=${1:?usage: build_llama_server.sh PYTHON VERSION}
version=${2:?usage: build_llama_server.sh PYTHON VERSION}

source "$(dirname "$0")/llama_cpp_flags.sh"

cmake_args="$(llama_cpp_cmake_args) -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
-DLLAMA_OPENSSL=OFF"
key=$(printf 'llama-server|%s|%s' "$version" "$cmake_args" | sha256sum | cut -c1-16)
if [[ "$python_bin" == "--print-key" ]]; then
    echo "$key"
    exit 0
fi
cache_dir="$(llama_cpp_cache_root)/llama-server/$version-$key"
prefix=$("$python_bin" -c 'import sys; print(sys.prefix)')
target="$prefix/bin/llama-server"
marker="$prefix/.llama-server-build"

# A virtualenv restored from CI's cache already holds it: nothing to build.
if [[ -x "$target" && -f "$marker" && "$(cat "$marker")" == "$key" ]]; then
    echo "llama-server $version already installed with flags $key"
    exit 0
fi

if [[ ! -x "$cache_dir/llama-server" ]]; then
    echo "Building llama-server from llama-cpp-python $version's vendored llama.cpp (several minutes on 2 cores)"
    echo "  CMake arguments: $cmake_args"
    tmp_dir=$(mktemp -d)
    trap 'rm -rf "$tmp_dir"' EXIT
    started=$(date +%s)
    # The sdist, not the wheel: it carries vendor/llama.cpp. Metadata is prepared with the
    # build tools the install already put in the environment (scikit-build-core).
    "$python_bin" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
        --no-build-isolation -d "$tmp_dir" "llama-cpp-python==$version"
    tar -xzf "$tmp_dir"/llama_cpp_python-"$version".tar.gz -C "$tmp_dir"
    src="$tmp_dir/llama_cpp_python-$version/vendor/llama.cpp"
    generator=()
    command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
    # shellcheck disable=SC2086  # cmake_args is a list of words
    cmake -S "$src" -B "$tmp_dir/build" "${generator[@]}" $cmake_args >"$tmp_dir/configure.log" \
        || { cat "$tmp_dir/configure.log"; exit 1; }
    cmake --build "$tmp_dir/build" --target llama-server \
        -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
    mkdir -p "$cache_dir"
    cp "$tmp_dir/build/bin/llama-server" "$cache_dir/llama-server.tmp"
    printf '%s\n' "$cmake_args" > "$cache_dir/CMAKE_ARGS"
    mv "$cache_dir/llama-server.tmp" "$cache_dir/llama-server"
    echo "Built llama-server in $(( $(date +%s) - started )) s"
fi

install -m 0755 "$cache_dir/llama-server" "$target"
echo "$key" > "$marker"
echo "llama-server $version ($key) installed as $target"
