# Shared by scripts/demo.sh and scripts/test.sh: find the toolchain and
# install what is missing (as root), or print the exact line to run.
set -euo pipefail

KVCACHE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KVCACHE_PACKAGES=(cmake ninja-build g++ libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
  libxxhash-dev libeigen3-dev nlohmann-json3-dev clang-format python3)
# The tests also fuzz (libFuzzer comes with clang), test the Redis tier
# (hiredis, and a real redis-server each test starts on loopback), and scrape
# /metrics (cpp-httplib, found with pkg-config; Python's prometheus_client
# parses what the tools serve).
KVCACHE_TEST_PACKAGES=(clang libclang-rt-dev libhiredis-dev redis-server redis-tools pkgconf
  libcpp-httplib-dev python3-prometheus-client)

kvcache_log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Installs KVCACHE_PACKAGES and any extra packages named as arguments.
kvcache_ensure_packages() {
  if ! command -v dpkg >/dev/null 2>&1; then
    kvcache_log "not a Debian-like system: make sure these are installed: ${KVCACHE_PACKAGES[*]} $*"
    return 0
  fi
  local missing=()
  for package in "${KVCACHE_PACKAGES[@]}" "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    kvcache_log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing packages; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

# Puts nvcc on PATH when the toolkit sits in its usual place.
kvcache_find_cuda() {
  if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
}

kvcache_jobs() { nproc 2>/dev/null || echo 2; }
