// Durable file operations for checkpoints (compiled into the kvcache
// library, src/checkpoint_files.cpp; POSIX).
//
//   write_file_atomic  the bytes go to PATH.tmp, which is flushed (fsync),
//                      renamed over PATH, and the directory flushed: at any
//                      moment PATH is the old file or the new one, whole
//   AtomicFile         the same, streamed: a writer's sink (format.hpp) that
//                      writes PATH.tmp and, at commit(), flushes and renames
//                      it; destroyed uncommitted, it removes PATH.tmp and
//                      leaves PATH as it was
//   MappedFile         a file mapped read-only (and populated) for a restore:
//                      its bytes are read where they lie, without a copy
//                      (the writers here never truncate a file in place:
//                      they rename a new one over it, or append)
//   append_durable     the bytes are appended and flushed before it returns
//                      (a crash can leave a torn tail, which the log reader
//                      detects and ignores)
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <vector>

#include "kvcache/checkpoint/format.hpp"

namespace kvcache::checkpoint {

class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

class AtomicFile final : public Sink {
 public:
  explicit AtomicFile(std::filesystem::path path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() override;
  void write(std::span<const std::byte> bytes) override;
  void write_at(std::uint64_t offset, std::span<const std::byte> bytes) override;
  // fsync, rename over the path, fsync of the directory.
  void commit();

 private:
  std::filesystem::path path_, temporary_;
  int fd_ = -1;
};

// The whole file; CheckpointError naming the path when it cannot be read.
std::vector<std::byte> read_file(const std::filesystem::path& path);
void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes);
void append_durable(const std::filesystem::path& path, std::span<const std::byte> bytes);

}  // namespace kvcache::checkpoint
