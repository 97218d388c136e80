// Checkpoint and restore of a manager's cache (the format: checkpoint/
// format.hpp and docs/checkpoint-format.md).
//
//   save_checkpoint(cache, path)          every sequence (or a set), shared
//                                         blocks once, atomically
//   restore_checkpoint(cache, path)       into an empty manager of the same
//                                         model shape and codec: sequences,
//                                         token counts, prompt keys, parked
//                                         state and sharing come back; another
//                                         block size, layout, allocation or
//                                         backend works too (rows re-laid out)
//   CheckpointDirectory dir(cache, path, every_tokens)
//     dir.step(app) after each engine step: a log record of what changed
//     (blocks written since the last, the sequence table, the engine's bytes)
//     every `every_tokens` committed tokens, a full checkpoint when the log
//     has outgrown it; dir.restore() after a crash.
//
// A checkpoint that cannot be read, or does not fit, throws CheckpointError
// naming the section and offset or what differs, and the target is left as
// it was. A torn log tail is ignored up to the last good record, and the
// restore report says so. Everything is read and checked before anything in
// the target changes. Blocks go as the codec stores them (codes and scales).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "kvcache/checkpoint/files.hpp"
#include "kvcache/checkpoint/format.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/detail/manager_access.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/layout.hpp"
#include "kvcache/manager.hpp"

namespace kvcache {

struct RestoreReport {
  std::map<SeqId, SeqId> ids;  // saved id -> id in the restored cache
  std::int64_t blocks = 0;     // blocks written into the cache
  std::int64_t records = 0;    // log records applied (a directory)
  bool relaid_out = false;     // rows moved into another block geometry
  std::vector<std::string> notes;
  std::vector<std::byte> app;  // the engine's bytes saved with the cache
};

namespace checkpoint {

inline std::uint64_t new_generation() {
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device() ^ 0x9e3779b97f4a7c15ULL;
}

template <class Manager>
Format format_of(const Manager& m, std::uint64_t generation) {
  Format f;
  f.shape = m.shape();
  f.block_size = m.block_size();
  f.layout = static_cast<std::uint8_t>(m.config().layout);
  f.codec_kind = static_cast<std::uint8_t>(Manager::Codec::kKind);
  f.codec = Manager::Codec::name();
  f.bytes_per_block = m.bytes_per_block();
  f.side_bytes = m.codec().side_bytes_per_sequence();
  f.generation = generation;
  return f;
}

// The manager's sequences (every one, or `only`) as saved.
template <class Manager>
std::vector<SavedSequence> save_sequences(Manager& m, std::span<const SeqId> only) {
  const auto& table = detail::ManagerAccess::sequences(m);
  std::vector<SeqId> ids(only.begin(), only.end());
  if (ids.empty()) table.for_each([&](SeqId id, const auto&) { ids.push_back(id); });
  const std::int64_t side = m.codec().side_bytes_per_sequence();
  std::vector<SavedSequence> out;
  for (SeqId id : ids) {
    const auto& s = table.find(id, "save_checkpoint");
    SavedSequence o;
    o.id = id;
    o.num_tokens = s.num_tokens;
    o.paged_tokens = m.codec().paged_tokens(s.codec, s.num_tokens);
    o.parked = s.parked;
    o.hashable = s.hashable;
    o.tokens = s.tokens;
    const auto written = kernels::pages_for_tokens(o.paged_tokens, m.block_size());
    o.blocks.assign(s.blocks.begin(), s.blocks.begin() + written);
    if (side > 0) {
      o.side.resize(static_cast<std::size_t>(side));
      m.codec().save_side(s.codec, o.side.data());
    }
    out.push_back(std::move(o));
  }
  return out;
}

// Block `block`'s bytes as stored: a view of the page itself when the
// backend's memory is the host's (after the copies it queued), else copied
// into `scratch`.
template <class Manager>
std::span<const std::byte> block_bytes(Manager& m, std::int32_t block,
                                       std::vector<std::byte>& scratch) {
  const auto bytes = static_cast<std::size_t>(m.bytes_per_block());
  const std::byte* page =
      detail::ManagerAccess::arena(m) + std::int64_t{block} * m.bytes_per_block();
  if constexpr (!Manager::backend_type::kDeviceMemory) {
    return {page, bytes};
  } else {
    scratch.resize(bytes);
    m.backend().copy_to_host(scratch.data(), page, bytes);
    return scratch;
  }
}

// The blocks `ids`, written as BLK sections.
template <class Manager>
void write_cache_blocks(Writer& w, Manager& m, std::span<const std::int32_t> ids) {
  if constexpr (!Manager::backend_type::kDeviceMemory) m.backend().synchronize();
  std::vector<std::byte> scratch;
  write_blocks(w, ids, m.bytes_per_block(),
               [&](std::int32_t id) { return block_bytes(m, id, scratch); });
}

template <class Manager>
void write_codec_state(Writer& w, Manager& m) {
  if constexpr (Manager::Storage::kCalibrated)
    write_state(w, m.codec().calibrated_layers(), m.codec().state());
}

// A full checkpoint, through `w`.
template <class Manager>
void write_full(Writer& w, Manager& m, std::span<const SeqId> only, std::span<const std::byte> app,
                std::uint64_t generation) {
  const std::vector<SavedSequence> sequences = save_sequences(m, only);
  std::set<std::int32_t> blocks;
  for (const SavedSequence& s : sequences)
    blocks.insert(s.blocks.begin(), s.blocks.end());
  const std::vector<std::int32_t> ids(blocks.begin(), blocks.end());
  w.file_header(FileKind::kFull);
  write_format(w, format_of(m, generation));
  write_codec_state(w, m);
  write_cache_blocks(w, m, ids);
  write_sequences(w, sequences, {});
  write_app(w, app);
  const std::uint64_t end = w.begin_section(kEndTag);
  w.u64(static_cast<std::uint64_t>(w.sections() + 1));
  w.end_section(end);
  w.flush();
}

// A full checkpoint's bytes, in memory.
template <class Manager>
std::vector<std::byte> encode_full(Manager& m, std::span<const SeqId> only,
                                   std::span<const std::byte> app, std::uint64_t generation) {
  std::vector<std::byte> out;
  Writer w(out);
  write_full(w, m, only, app, generation);
  return out;
}

// A full checkpoint written to `path` atomically (streamed: blocks go from
// the pages to the file); returns its size in bytes.
template <class Manager>
std::int64_t write_full_file(Manager& m, const std::filesystem::path& path,
                             std::span<const SeqId> only, std::span<const std::byte> app,
                             std::uint64_t generation) {
  AtomicFile file(path);
  std::vector<std::byte> staging;
  Writer w(staging, &file);
  write_full(w, m, only, app, generation);
  file.commit();
  return static_cast<std::int64_t>(w.position());
}

// What another cache must share with the checkpoint to take it.
template <class Manager>
void check_compatible(const Manager& m, const Format& f) {
  const ModelShape& s = m.shape();
  if (!(f.shape == s)) {
    detail::raise<CheckpointError>(
        "restore: the checkpoint holds a model of {} layers x {} KV heads x {} ({}); this cache's "
        "is {} layers x {} x {} ({})",
        f.shape.num_layers, f.shape.num_kv_heads, f.shape.head_dim, dtype_name(f.shape.dtype),
        s.num_layers, s.num_kv_heads, s.head_dim, dtype_name(s.dtype));
  }
  if (f.codec != Manager::Codec::name() ||
      f.codec_kind != static_cast<std::uint8_t>(Manager::Codec::kKind)) {
    detail::raise<CheckpointError>("restore: the checkpoint's codec is {}; this cache's is {}",
                                   f.codec, Manager::Codec::name());
  }
  if (f.side_bytes != m.codec().side_bytes_per_sequence()) {
    detail::raise<CheckpointError>(
        "restore: the checkpoint keeps {} bytes beside each sequence; this cache keeps {}",
        f.side_bytes, m.codec().side_bytes_per_sequence());
  }
}

// Byte ranges of row (layer, kv, token, head) within a page of `block_size`
// tokens (plain: one; token-major codecs: codes and scales).
struct RowRange {
  std::int64_t offset = 0;
  std::int64_t bytes = 0;
};

template <class Codec>
struct RowGeometry {
  RowGeometry(const ModelShape& shape, std::int32_t block_size, KVLayout layout) {
    if constexpr (Codec::kKind == CodecKind::kPlain) {
      plain = make_plain_view(nullptr, 1, block_size, shape.num_layers, shape.num_kv_heads,
                              shape.head_dim, shape.dtype, layout);
    } else if constexpr (Codec::kKind != CodecKind::kKivi) {
      coded = make_codec_view(nullptr, 1, block_size, shape.num_layers, shape.num_kv_heads,
                              shape.head_dim, shape.dtype, Codec::region(shape, block_size, 0),
                              Codec::region(shape, block_size, 1));
      code_bytes = Codec::Rows::code_bytes(shape.head_dim);
      scale_bytes = Codec::Rows::scale_bytes(shape.head_dim);
    }
  }
  std::array<RowRange, 2> row(std::int32_t layer, std::int32_t kv, std::int32_t token,
                              std::int32_t head) const {
    if constexpr (Codec::kKind == CodecKind::kPlain) {
      return {RowRange{plain.row_offset(0, layer, kv, token, head), plain.row_bytes()}, RowRange{}};
    } else {
      const auto base = reinterpret_cast<std::uintptr_t>(coded.data);
      return {RowRange{static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(
                                                     coded.row_codes(0, layer, kv, token, head)) -
                                                 base),
                       code_bytes},
              RowRange{static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(
                                                     coded.row_scales(0, layer, kv, token, head)) -
                                                 base),
                       scale_bytes}};
    }
  }
  PagedKVView plain;
  CodecPageView coded;
  std::int64_t code_bytes = 0;
  std::int64_t scale_bytes = 0;
};

// Restores `image` into the empty manager `m`. Throws (leaving `m` as it
// was) when it does not fit or the pool has no room for it.
template <class Manager>
RestoreReport restore_image(Manager& m, const Image& image) {
  using Codec = typename Manager::Codec;
  using Storage = typename Manager::Storage;
  using Allocation = typename Manager::Allocation;
  const Format& f = image.format;
  check_compatible(m, f);
  if (m.num_sequences() != 0) {
    detail::raise<InvalidArgument>(
        "restore: the cache holds {} sequences; a checkpoint is restored into one that holds none",
        m.num_sequences());
  }
  const bool same_pages = f.block_size == m.block_size() &&
                          f.layout == static_cast<std::uint8_t>(m.config().layout) &&
                          f.bytes_per_block == m.bytes_per_block();
  if (!same_pages && Codec::kKind == CodecKind::kKivi) {
    detail::raise<CheckpointError>(
        "restore: KIVI pages of {} tokens cannot be re-laid out into pages of {} (its keys are "
        "quantized a page at a time)",
        f.block_size, m.block_size());
  }
  if constexpr (Storage::kCalibrated) {
    const std::size_t floats = m.codec().state().size();
    if ((!image.state.empty() && image.state.size() != floats) ||
        (!image.calibrated.empty() &&
         static_cast<std::int64_t>(image.calibrated.size()) != m.shape().num_layers)) {
      detail::raise<CheckpointError>("restore: a calibrated state of {} floats for {} expected",
                                     image.state.size(), floats);
    }
  }
  auto& table = detail::ManagerAccess::sequences(m);
  auto& ledger = detail::ManagerAccess::ledger(m);
  auto drop = detail::ManagerAccess::drop_sequence(m);
  std::byte* arena = detail::ManagerAccess::arena(m);
  const std::int64_t page_bytes = m.bytes_per_block();
  RestoreReport report;
  report.relaid_out = !same_pages;
  report.records = image.records;
  report.notes = image.notes;
  report.app = image.app;

  // Everything the restore takes, so that a failure gives it all back.
  std::vector<SeqId> created;
  std::vector<BlockId> loose;  // blocks allocated, not yet held by a sequence
  std::vector<std::uint8_t> old_layers;
  std::vector<float> old_state;
  if constexpr (Storage::kCalibrated) {
    old_layers = m.codec().calibrated_layers();
    old_state = m.codec().state();
  }
  auto undo = [&] {
    for (SeqId id : created)
      m.release(id);
    if constexpr (!Allocation::kContiguous) {
      for (BlockId b : loose)
        ledger.allocation_mut().pool().release(b);
    }
    if constexpr (Storage::kCalibrated) m.codec().load_calibration(old_layers, old_state);
  };
  try {
    if constexpr (Storage::kCalibrated) {
      if (!image.state.empty()) m.codec().load_calibration(image.calibrated, image.state);
    }
    // Same pages, paged allocation: blocks come back once, shared as saved.
    std::map<std::int32_t, BlockId> placed;
    if constexpr (!Allocation::kContiguous) {
      if (same_pages) {
        std::map<std::int32_t, std::int32_t> owners;
        for (const SavedSequence& s : image.sequences)
          for (std::int32_t b : s.blocks)
            ++owners[b];
        const auto needed = static_cast<std::int64_t>(owners.size());
        if (needed > m.num_free_blocks() + m.num_cached_blocks()) {
          detail::raise<OutOfMemory>("restore: the checkpoint needs {} blocks; this cache has {}",
                                     needed, m.num_free_blocks() + m.num_cached_blocks());
        }
        ledger.evict_until([&] { return m.num_free_blocks() >= needed; }, drop);
        for (const auto& [saved, count] : owners) {
          const BlockId b = *ledger.allocation_mut().pool().try_allocate();
          loose.push_back(b);
          placed[saved] = b;
          const std::span<const std::byte> bytes = image.blocks.at(saved);
          m.backend().copy_to_backend(arena + std::int64_t{b} * page_bytes, bytes.data(),
                                      bytes.size());
          ++report.blocks;
        }
      }
    }
    const RowGeometry<Codec> from(f.shape, f.block_size, static_cast<KVLayout>(f.layout));
    const RowGeometry<Codec> to(m.shape(), m.block_size(), m.config().layout);
    std::vector<std::byte> page(static_cast<std::size_t>(page_bytes));
    for (const SavedSequence& saved : image.sequences) {
      auto s = detail::ManagerAccess::new_entry<Manager>();
      if (!detail::ManagerAccess::attach(m, s)) {
        detail::raise<OutOfMemory>("restore: no room for sequence {}'s {} codec state", saved.id,
                                   Codec::name());
      }
      s.num_tokens = saved.num_tokens;
      s.tokens = saved.tokens;
      s.hashable = saved.hashable;
      const std::int64_t pages = kernels::pages_for_tokens(saved.paged_tokens, m.block_size());
      bool shared_pages = false;
      if constexpr (!Allocation::kContiguous) {
        shared_pages = same_pages;
        if (shared_pages) {
          for (std::int32_t b : saved.blocks) {
            const BlockId target = placed.at(b);
            auto it = std::find(loose.begin(), loose.end(), target);
            if (it != loose.end()) {
              loose.erase(it);  // its first owner takes the allocation's reference
            } else {
              ledger.allocation_mut().pool().retain(target);
            }
            s.blocks.push_back(target);
          }
        }
      }
      if (!shared_pages) {
        if (!ledger.reserve(s.blocks, 0, pages, -1, drop)) {
          m.codec().detach(s.codec);
          detail::raise<OutOfMemory>("restore: no room for sequence {}'s {} blocks", saved.id,
                                     pages);
        }
        // Page by page, assembled on the host: whole saved pages, or rows.
        for (std::int64_t j = 0; j < pages; ++j) {
          if (same_pages) {
            const std::span<const std::byte> bytes =
                image.blocks.at(saved.blocks[static_cast<std::size_t>(j)]);
            std::copy(bytes.begin(), bytes.end(), page.begin());
          } else {
            std::fill(page.begin(), page.end(), std::byte{0});
            const std::int64_t first = j * m.block_size();
            const std::int64_t last = std::min(saved.paged_tokens, first + m.block_size());
            for (std::int64_t t = first; t < last; ++t) {
              const std::span<const std::byte> src =
                  image.blocks.at(saved.blocks[static_cast<std::size_t>(t / f.block_size)]);
              const auto ts = static_cast<std::int32_t>(t % f.block_size);
              const auto td = static_cast<std::int32_t>(t - first);
              for (std::int32_t layer = 0; layer < f.shape.num_layers; ++layer)
                for (std::int32_t kv = 0; kv < 2; ++kv)
                  for (std::int32_t h = 0; h < f.shape.num_kv_heads; ++h) {
                    const auto a = from.row(layer, kv, ts, h);
                    const auto b = to.row(layer, kv, td, h);
                    for (int piece = 0; piece < 2; ++piece) {
                      if (a[piece].bytes == 0) continue;
                      std::copy_n(src.begin() + a[piece].offset, a[piece].bytes,
                                  page.begin() + b[piece].offset);
                    }
                  }
            }
          }
          m.backend().copy_to_backend(
              arena + std::int64_t{s.blocks[static_cast<std::size_t>(j)]} * page_bytes, page.data(),
              page.size());
          ++report.blocks;
        }
      }
      if (!saved.side.empty()) m.codec().load_side(s.codec, saved.side.data());
      m.codec().on_prefix_hit(s.codec, saved.paged_tokens);
      ledger.publish(s, static_cast<std::size_t>(saved.paged_tokens / m.block_size()),
                     m.block_size());
      const SeqId id = table.insert(std::move(s));
      created.push_back(id);
      report.ids[saved.id] = id;
      if (saved.parked) m.park(id);
    }
    if (!loose.empty())
      detail::raise<Error>("restore: {} saved blocks belong to no sequence", loose.size());
  } catch (...) {
    undo();
    throw;
  }
  detail::ManagerAccess::invalidate_batches(m);
  return report;
}

}  // namespace checkpoint

// Every sequence of `m` (or those of `only`) and `app` (the engine's own
// bytes) to `path`, atomically (checkpoint/files.hpp).
template <class Manager>
void save_checkpoint(Manager& m, const std::filesystem::path& path,
                     std::span<const std::byte> app = {}, std::span<const SeqId> only = {}) {
  (void)checkpoint::write_full_file(m, path, only, app, checkpoint::new_generation());
}

template <class Manager>
RestoreReport restore_checkpoint(Manager& m, const std::filesystem::path& path) {
  const checkpoint::MappedFile file(path);
  return checkpoint::restore_image(m, checkpoint::read_full(file.bytes()));
}

// Periodic checkpoints in a directory: DIR/checkpoint.kvc (full) and
// DIR/log.kvc (records since). Not thread-safe; call it between steps.
template <class Manager>
class CheckpointDirectory {
 public:
  CheckpointDirectory(Manager& m, std::filesystem::path dir, std::int64_t every_tokens)
      : m_(m), dir_(std::move(dir)), every_(every_tokens) {
    if (every_tokens < 1) {
      detail::raise<InvalidArgument>("CheckpointDirectory: every {} tokens (allowed: 1 or more)",
                                     every_tokens);
    }
    std::filesystem::create_directories(dir_);
  }

  std::filesystem::path full_path() const { return dir_ / "checkpoint.kvc"; }
  std::filesystem::path log_path() const { return dir_ / "log.kvc"; }

  // What the directory holds, restored into the (empty) manager; nullopt
  // when there is no checkpoint yet. Writing continues after it.
  std::optional<RestoreReport> restore() {
    if (!std::filesystem::exists(full_path())) return std::nullopt;
    const checkpoint::MappedFile full(full_path());
    checkpoint::Image image = checkpoint::read_full(full.bytes());
    std::optional<checkpoint::MappedFile> log;  // the image's blocks point into it
    if (std::filesystem::exists(log_path())) {
      log.emplace(log_path());
      try {
        checkpoint::apply_log(log->bytes(), image);
      } catch (const CheckpointError& error) {
        image.notes.push_back(fmt::format("the log is unreadable ({}): ignored", error.what()));
      }
    }
    RestoreReport report = checkpoint::restore_image(m_, image);
    // Continue from here: a fresh full checkpoint, so that the ids and
    // blocks the next records name are this cache's.
    write_full(report.app);
    return report;
  }

  void write_full(std::span<const std::byte> app = {}) {
    generation_ = checkpoint::new_generation();
    full_bytes_ = checkpoint::write_full_file(m_, full_path(), {}, app, generation_);
    std::vector<std::byte> log;
    checkpoint::Writer w(log);
    w.file_header(checkpoint::FileKind::kLog);
    checkpoint::write_format(w, checkpoint::format_of(m_, generation_));
    checkpoint::write_file_atomic(log_path(), log);
    log_bytes_ = static_cast<std::int64_t>(log.size());
    records_ = 0;
    remember(checkpoint::save_sequences(m_, {}));
  }

  void write_record(std::span<const std::byte> app = {}) {
    if (generation_ == 0) return write_full(app);
    const std::vector<checkpoint::SavedSequence> now = checkpoint::save_sequences(m_, {});
    std::vector<std::int32_t> dirty;
    std::vector<std::int64_t> from;
    std::vector<checkpoint::SavedSequence> written;
    std::set<std::int32_t> seen;
    for (const checkpoint::SavedSequence& s : now) {
      auto it = saved_.find(s.id);
      const Known* k = it == saved_.end() ? nullptr : &it->second;
      const std::int64_t settled = k == nullptr ? 0 : k->paged_tokens / m_.block_size();
      for (std::size_t i = 0; i < s.blocks.size(); ++i) {
        const bool same = k != nullptr && i < k->blocks.size() && k->blocks[i] == s.blocks[i] &&
                          static_cast<std::int64_t>(i) < settled;
        if (!same && seen.insert(s.blocks[i]).second) dirty.push_back(s.blocks[i]);
      }
      checkpoint::SavedSequence out = s;
      if (k != nullptr && k->num_tokens == s.num_tokens) out.side.clear();  // unchanged ring
      from.push_back(k == nullptr ? 0 : k->num_tokens);
      written.push_back(std::move(out));
    }
    std::vector<std::byte> record;
    checkpoint::Writer w(record);
    checkpoint::write_cache_blocks(w, m_, dirty);
    checkpoint::write_sequences(w, written, from);
    checkpoint::write_app(w, app);
    const std::uint64_t at = w.begin_section(checkpoint::kCommitTag);
    w.u64(static_cast<std::uint64_t>(records_ + 1));
    w.end_section(at);
    checkpoint::append_durable(log_path(), record);
    log_bytes_ += static_cast<std::int64_t>(record.size());
    ++records_;
    remember(now);
  }

  // After an engine step: a record once `every_tokens` tokens were committed
  // since the last checkpoint, a full checkpoint instead when none exists or
  // the log has grown past twice the full one. True when something was written.
  bool step(std::span<const std::byte> app = {}) {
    std::int64_t grown = 0;
    detail::ManagerAccess::sequences(m_).for_each([&](SeqId id, const auto& s) {
      auto it = saved_.find(id);
      grown +=
          s.num_tokens - (it == saved_.end() ? 0 : std::min(it->second.num_tokens, s.num_tokens));
    });
    if (generation_ != 0 && grown < every_) return false;
    if (generation_ == 0 || log_bytes_ > 2 * full_bytes_) {
      write_full(app);
    } else {
      write_record(app);
    }
    return true;
  }

  std::int64_t records() const { return records_; }

 private:
  struct Known {
    std::int64_t num_tokens = 0;
    std::int64_t paged_tokens = 0;
    std::vector<std::int32_t> blocks;
  };
  void remember(const std::vector<checkpoint::SavedSequence>& now) {
    saved_.clear();
    for (const checkpoint::SavedSequence& s : now)
      saved_[s.id] = Known{s.num_tokens, s.paged_tokens, s.blocks};
  }

  Manager& m_;
  std::filesystem::path dir_;
  std::int64_t every_;
  std::uint64_t generation_ = 0;
  std::int64_t full_bytes_ = 0;
  std::int64_t log_bytes_ = 0;
  std::int64_t records_ = 0;
  std::map<SeqId, Known> saved_;
};

}  // namespace kvcache
