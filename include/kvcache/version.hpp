// The library's version: the one place it is written (CMake reads it from here).
#pragma once

#define KVCACHE_VERSION_MAJOR 0
#define KVCACHE_VERSION_MINOR 2
#define KVCACHE_VERSION_PATCH 0

namespace kvcache {
inline constexpr int kVersionMajor = KVCACHE_VERSION_MAJOR;
inline constexpr int kVersionMinor = KVCACHE_VERSION_MINOR;
inline constexpr int kVersionPatch = KVCACHE_VERSION_PATCH;
}  // namespace kvcache
