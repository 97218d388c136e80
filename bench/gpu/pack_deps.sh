#!/usr/bin/env bash
# Copies the header-only dependencies that a GPU machine may lack (today:
# nlohmann-json, which the replay and demo tools need) from this machine's
# Debian packages into an install prefix inside the build tree (ignored by
# git), for a device run that carries it:
#
#   bash bench/gpu/pack_deps.sh [DIR]          (default build/deps)
#   ... then on the GPU machine: bash bench/gpu/run.sh --deps DIR
#
# Nothing is downloaded and nothing enters the repository.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dir=${1:-build/deps}
[ -f /usr/include/nlohmann/json.hpp ] || { echo "nlohmann-json is not installed here (apt-get install nlohmann-json3-dev)" >&2; exit 1; }
mkdir -p "$dir/include" "$dir/share/cmake"
cp -r /usr/include/nlohmann "$dir/include/"
cp -r /usr/share/cmake/nlohmann_json "$dir/share/cmake/"
echo "$dir: nlohmann-json $(sed -n 's/.*PACKAGE_VERSION "\([0-9.]*\)".*/\1/p' "$dir/share/cmake/nlohmann_json/nlohmann_jsonConfigVersion.cmake" | head -n 1) ($(du -sh "$dir" | cut -f1))"
