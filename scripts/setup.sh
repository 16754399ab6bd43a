#!/usr/bin/env bash
# Installs the build and test dependencies on a fresh Debian 12 machine (run as root).
# Idempotent: when every package is already installed it returns without touching apt.
set -euo pipefail

readonly PACKAGES=(
  build-essential cmake ninja-build g++
  clang-14 libclang-rt-14-dev clang-format clang-tidy
  libssl-dev libxxhash-dev libgtest-dev googletest libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev libspdlog-dev libasio-dev
  git python3 python3-matplotlib
  socat netcat-openbsd iproute2 iptables iputils-ping
  iperf3  # bench/ (docs/performance.md): kernel TCP on the same loopback, the anchor of the one-way benchmarks
  mininet bridge-utils  # testbed/ (docs/testbed.md): Mininet with Linux bridges
  postgresql-15 libpq-dev  # apps/dbfrontend (docs/dbfrontend.md): a throwaway PostgreSQL cluster and libpq
  # apps/streaming (docs/streaming.md): GStreamer 1.22 to build against and to play with;
  # -ugly has x264enc (test media), -libav has avdec_h264, -bad has the MPEG-TS muxer/parser
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
)

is_installed() {
  local status
  status="$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)"
  [[ "${status}" == "installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! is_installed "${pkg}"; then
    missing+=("${pkg}")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "setup: missing ${#missing[@]} package(s): ${missing[*]}"
if ((EUID != 0)); then
  echo "setup: error: installing packages needs root; rerun as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "setup: apt-get update"
if ! apt-get update; then
  echo "setup: error: apt-get update failed" >&2
  exit 1
fi
echo "setup: apt-get install ${missing[*]}"
if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
  echo "setup: error: apt-get install failed" >&2
  exit 1
fi

still_missing=()
for pkg in "${missing[@]}"; do
  if ! is_installed "${pkg}"; then
    still_missing+=("${pkg}")
  fi
done
if ((${#still_missing[@]} != 0)); then
  echo "setup: error: still not installed: ${still_missing[*]}" >&2
  exit 1
fi
echo "setup: done"
