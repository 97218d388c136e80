// Checkpoint and restore through the manager, against plain file I/O of the
// same bytes in the same iteration: a cache of K blocks of random rows (one
// sequence, Llama-3-8B-like geometry: 32 layers x 8 KV heads x 128, fp16,
// block 16, 2 MiB a block) saved with save_checkpoint (encode, checksums,
// write to a temporary file, fsync, rename, fsync of the directory) and
// restored with restore_checkpoint into an empty manager (the file mapped,
// checks, rows into pages; the manager is made once and emptied between
// iterations, its pool memory already faulted in). The plain I/O it is compared with writes the
// checkpoint file's bytes with write() and fsync() (the same durability), and reads them back with
// read().
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "kvcache/checkpoint/checkpoint.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::bench {

class CheckpointFiles {
 public:
  using Manager = KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>;

  explicit CheckpointFiles(std::int64_t blocks)
      : dir_(std::filesystem::temp_directory_path() /
             ("kvcache-checkpoint-bench-" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(dir_);
    config_.shape = ModelShape::gqa(smoke() ? 2 : 32, 8, 128, DType::kF16);
    config_.block_size = 16;
    config_.num_blocks = blocks;
    config_.max_batch_tokens = static_cast<std::int32_t>(blocks * 16);
    config_.max_batch_sequences = 1;
    source_ = std::make_unique<Manager>(config_);
    const auto tokens = static_cast<std::int32_t>(blocks * 16);
    const SeqId seq = source_->create_sequence();
    if (source_->try_reserve(seq, tokens) != ReserveStatus::kOk)
      throw std::runtime_error("checkpoint bench: no room for the sequence");
    const ModelShape& shape = config_.shape;
    std::vector<std::uint16_t> rows(static_cast<std::size_t>(tokens * shape.kv_width()));
    std::mt19937_64 rng(11);
    AppendBatch batch =
        source_->prepare_append(std::vector<SeqId>{seq}, std::vector<std::int32_t>{tokens});
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      for (auto& x : rows)
        x = static_cast<std::uint16_t>(rng() & 0x3bff);  // finite fp16 values
      const TensorView view =
          TensorView::packed(rows.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim);
      source_->append(layer, batch, view, view);
    }
    source_->commit(batch);
  }
  ~CheckpointFiles() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void save() { save_checkpoint(*source_, checkpoint_path()); }
  std::int64_t file_bytes() const {
    return static_cast<std::int64_t>(std::filesystem::file_size(checkpoint_path()));
  }
  // Untimed: the target emptied (its sequences released) to restore into
  // again; made once, so that its pool is faulted in as a serving cache's is.
  void empty_target() {
    if (!target_) {
      target_ = std::make_unique<Manager>(config_);
      return;
    }
    for (const SeqId id : restored_)
      target_->release(id);
    restored_.clear();
  }
  void restore() {
    const RestoreReport report = restore_checkpoint(*target_, checkpoint_path());
    if (report.ids.size() != 1) throw std::runtime_error("checkpoint bench: nothing restored");
    for (const auto& [saved, id] : report.ids)
      restored_.push_back(id);
  }

  // The plain file I/O of as many bytes.
  void plain_write(const std::vector<std::byte>& bytes) const {
    const std::string path = (dir_ / "plain.bin").string();
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) throw std::runtime_error("checkpoint bench: cannot write " + path);
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n <= 0) throw std::runtime_error("checkpoint bench: write failed");
      done += static_cast<std::size_t>(n);
    }
    ::fsync(fd);
    ::close(fd);
  }
  void plain_read(std::vector<std::byte>& into) const {
    const std::string path = (dir_ / "plain.bin").string();
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw std::runtime_error("checkpoint bench: cannot read " + path);
    std::size_t done = 0;
    while (done < into.size()) {
      const ssize_t n = ::read(fd, into.data() + done, into.size() - done);
      if (n <= 0) throw std::runtime_error("checkpoint bench: read failed");
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
  }

 private:
  std::filesystem::path checkpoint_path() const { return dir_ / "checkpoint.kvc"; }

  std::filesystem::path dir_;
  CacheConfig config_;
  std::unique_ptr<Manager> source_, target_;
  std::vector<SeqId> restored_;
};

}  // namespace kvcache::bench
