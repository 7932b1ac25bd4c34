#!/usr/bin/env bash
# Build llama-cpp-python from source with CPU flags that are safe on this machine, and install
# the wheel into the given Python environment.
#
# Why not a plain `pip install llama-cpp-python`:
# - its default build uses GGML_NATIVE, which crashes on some CPUs that report AMX; the safe
#   flags are in scripts/llama_cpp_flags.sh (shared with scripts/build_llama_server.sh);
# - pip's wheel cache ignores CMAKE_ARGS, so a wheel built once with other flags would be reused
#   silently. We build with --no-cache-dir into our own cache folder whose name carries a hash
#   of the flags, so a different set of flags always means a different, deliberate build.
#
# Usage: scripts/build_llama_cpp.sh PYTHON VERSION
#        scripts/build_llama_cpp.sh --print-key VERSION   (the build's key: version and CPU flags;
#        CI keys its virtualenv cache on it, so a venv built for one CPU never lands on another)
set -euo pipefail

python_bin=${1:?usage: build_llama_cpp.sh PYTHON VERSION}
version=${2:?usage: build_llama_cpp.sh PYTHON VERSION}

source "$(dirname "$0")/llama_cpp_flags.sh"

cmake_args=$(llama_cpp_cmake_args)
key=$(printf '%s|%s' "$version" "$cmake_args" | sha256sum | cut -c1-16)
if [[ "$python_bin" == "--print-key" ]]; then
    echo "$key"
    exit 0
fi
cache_root=${ARENA_WHEEL_CACHE:-$(llama_cpp_cache_root)/wheels}
wheel_dir="$cache_root/llama-cpp-python-$version-$key"
marker_dir=$("$python_bin" -c 'import sys; print(sys.prefix)')
marker="$marker_dir/.llama-cpp-build"

if [[ -f "$marker" && "$(cat "$marker")" == "$key" ]] \
    && "$python_bin" -c 'import llama_cpp' >/dev/null 2>&1; then
    echo "llama-cpp-python $version already installed with flags $key"
    exit 0
fi

if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "Building llama-cpp-python $version from source (takes several minutes on 2 cores)"
    echo "  CMAKE_ARGS=$cmake_args"
    tmp_dir=$(mktemp -d)
    trap 'rm -rf "$tmp_dir"' EXIT
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
        "$python_bin" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
        -w "$tmp_dir" "llama-cpp-python==$version"
    mkdir -p "$wheel_dir"
    mv "$tmp_dir"/llama_cpp_python-*.whl "$wheel_dir"/
    printf '%s\n' "$cmake_args" > "$wheel_dir/CMAKE_ARGS"
fi

"$python_bin" -m pip install --force-reinstall --no-deps "$wheel_dir"/llama_cpp_python-*.whl
# The pure-Python dependencies of llama-cpp-python come from the index as usual.
"$python_bin" -m pip install "numpy>=1.20" "typing-extensions>=4.5" "diskcache>=5.6.1" "jinja2>=2.11.3"
echo "$key" > "$marker"
