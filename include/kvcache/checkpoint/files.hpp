// Durable file operations for checkpoints (compiled into the kvcache
// library, src/checkpoint_files.cpp; POSIX).
//
//   write_file_atomic  the bytes go to PATH.tmp, which is flushed (fsync),
//                      renamed over PATH, and the directory flushed: at any
//                      moment PATH is the old file or the new one, whole
//   append_durable     the bytes are appended and flushed before it returns
//                      (a crash can leave a torn tail, which the log reader
//                      detects and ignores)
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <vector>

namespace kvcache::checkpoint {

// The whole file; CheckpointError naming the path when it cannot be read.
std::vector<std::byte> read_file(const std::filesystem::path& path);
void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes);
void append_durable(const std::filesystem::path& path, std::span<const std::byte> bytes);

}  // namespace kvcache::checkpoint
