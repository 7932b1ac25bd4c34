# Sourced by scripts/build_llama_cpp.sh (the Python wheel) and scripts/build_llama_server.sh (the
# llama-server binary): the one place for the CPU flags both builds of the vendored llama.cpp use.
#
# Why not ggml's defaults: GGML_NATIVE, on some CPUs that report AMX, crashes with SIGSEGV in
# ggml_backend_amx_mul_mat; we turn native detection off and enable only the SIMD sets the CPU
# really lists in /proc/cpuinfo, with AMX always off.

llama_cpp_cpu_flags() {
    # Prints the ggml CMake switches for the SIMD sets this CPU reports.
    local arch; arch=$(uname -m)
    if [[ "$arch" != "x86_64" && "$arch" != "amd64" ]]; then
        # Native detection is safe off x86 (the AMX problem is x86-only).
        echo "-DGGML_NATIVE=ON"
        return
    fi
    local flags; flags=$(grep -m1 '^flags' "${ARENA_CPUINFO:-/proc/cpuinfo}" 2>/dev/null || true)
    has() { [[ " $flags " == *" $1 "* ]]; }
    local args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    has avx && args+=" -DGGML_AVX=ON"
    has avx2 && args+=" -DGGML_AVX2=ON"
    has fma && args+=" -DGGML_FMA=ON"
    has f16c && args+=" -DGGML_F16C=ON"
    if has avx512f && has avx512bw && has avx512vl && has avx512dq && has avx512cd; then
        args+=" -DGGML_AVX512=ON"
        has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
    fi
    echo "$args"
}

# The CMake arguments shared by both builds (no tests, no examples).
llama_cpp_cmake_args() {
    echo "$(llama_cpp_cpu_flags) -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
}

# The root of the project's build cache (wheels/ and llama-server/ live under it).
llama_cpp_cache_root() {
    echo "${ARENA_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/serverless-llm-arena}"
}
