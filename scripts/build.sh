#!/usr/bin/env bash
# Configures and builds one variant with CMake + Ninja. Executables land in <builddir>/bin/.
#
#   scripts/build.sh [release|sanitize|fuzz] [extra cmake -D options...]
#
#   release   build/       RelWithDebInfo (core invariants on: MTCP_INVARIANTS defaults to ON)
#   sanitize  build-asan/  Debug (-O1, asserts and invariants on), address + undefined sanitizers,
#                          MTCP_SIM_SEEDS=2000
#   fuzz      build-fuzz/  clang-14, libFuzzer harnesses (MTCP_FUZZ=ON)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
  echo "usage: scripts/build.sh [release|sanitize|fuzz] [extra cmake options...]" >&2
}

mode="${1:-release}"
if (($# > 0)); then
  shift
fi

case "${mode}" in
  release)
    build_dir="build"
    cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    ;;
  sanitize)
    build_dir="build-asan"
    # Debug keeps assertions on; -O1 keeps the sanitized simulator fast enough for CI.
    # MTCP_INVARIANTS: the core's MTCP_ASSERT checks (on by default; said here on purpose).
    cmake_args=(-DMTCP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1"
      -DMTCP_SIM_SEEDS=2000 -DMTCP_INVARIANTS=ON)
    ;;
  fuzz)
    build_dir="build-fuzz"
    if ! command -v clang++-14 >/dev/null 2>&1; then
      echo "build: error: fuzz build needs clang++-14 (run scripts/setup.sh)" >&2
      exit 1
    fi
    export CC=clang-14 CXX=clang++-14
    cmake_args=(-DMTCP_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
      -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14)
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    echo "build: error: unknown variant '${mode}'" >&2
    usage
    exit 2
    ;;
esac

echo "build: configuring ${mode} in ${build_dir}/"
cmake -S . -B "${build_dir}" -G Ninja -DMTCP_WERROR=ON "${cmake_args[@]}" "$@"
echo "build: building ${mode} in ${build_dir}/"
if [[ "${mode}" == "fuzz" ]]; then
  cmake --build "${build_dir}" -j2 --target fuzzers  # the harnesses only
else
  cmake --build "${build_dir}" -j2
fi
echo "build: ${mode} OK (executables in ${build_dir}/bin/)"
