// The checkpoint file format (docs/checkpoint-format.md): little-endian, a
// 16-byte file header (magic, version, kind), then sections, each a 24-byte
// header (tag, zero flags, payload length, XXH3-64 of the payload) and its
// payload. Every length and count is bounded by the bytes that remain before
// it is trusted; a reader that meets anything else stops with a
// CheckpointError naming the section and the file offset.
//
//   full checkpoint  FMT, CST (calibrated state, if any), BLK (blocks, in
//                    sections of at most 64), SEQ (every sequence), APP (the
//                    engine's own bytes), END (section count)
//   log              FMT (its base's generation), then records: BLK..., SEQ,
//                    APP, CMT (the record's number); a record counts only when
//                    its CMT is read whole, so a torn append is seen and the
//                    log is read up to its last good record
//
// This header encodes and decodes images in memory (no file I/O: see
// checkpoint/files.hpp); checkpoint/checkpoint.hpp turns a manager into an
// image and back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/model_shape.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kvcache {

// A checkpoint that cannot be read or does not fit the cache it is restored
// into; the message names the section and offset, or what differs.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

namespace checkpoint {

inline constexpr char kMagic[8] = {'K', 'V', 'C', 'A', 'C', 'H', 'E', '\x1a'};
inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::size_t kFileHeaderBytes = 16;
inline constexpr std::size_t kSectionHeaderBytes = 24;
inline constexpr std::int32_t kBlocksPerSection = 64;

enum class FileKind : std::uint32_t { kFull = 1, kLog = 2 };

// Section tags: four ASCII characters, little-endian.
constexpr std::uint32_t tag(const char (&name)[5]) {
  return static_cast<std::uint32_t>(static_cast<unsigned char>(name[0])) |
         static_cast<std::uint32_t>(static_cast<unsigned char>(name[1])) << 8 |
         static_cast<std::uint32_t>(static_cast<unsigned char>(name[2])) << 16 |
         static_cast<std::uint32_t>(static_cast<unsigned char>(name[3])) << 24;
}
inline constexpr std::uint32_t kFormatTag = tag("FMT ");
inline constexpr std::uint32_t kStateTag = tag("CST ");
inline constexpr std::uint32_t kBlocksTag = tag("BLK ");
inline constexpr std::uint32_t kSequencesTag = tag("SEQ ");
inline constexpr std::uint32_t kAppTag = tag("APP ");
inline constexpr std::uint32_t kEndTag = tag("END ");
inline constexpr std::uint32_t kCommitTag = tag("CMT ");

inline std::string tag_name(std::uint32_t t) {
  std::string name(4, '?');
  for (int i = 0; i < 4; ++i) {
    const auto c = static_cast<char>((t >> (8 * i)) & 0xffu);
    name[static_cast<std::size_t>(i)] = c >= 32 && c < 127 ? c : '?';
  }
  return name;
}

// What a cache must match to take the blocks (or be re-laid out into).
struct Format {
  ModelShape shape;
  std::int32_t block_size = 0;
  std::uint8_t layout = 0;      // KVLayout
  std::uint8_t codec_kind = 0;  // CodecKind
  std::string codec;            // Codec::name(): the codec and its parameters
  std::int64_t bytes_per_block = 0;
  std::int64_t side_bytes = 0;   // per sequence (KIVI's ring)
  std::uint64_t generation = 0;  // ties a log to the full checkpoint it follows
};

struct SavedSequence {
  std::uint64_t id = 0;
  std::int64_t num_tokens = 0;
  std::int64_t paged_tokens = 0;  // tokens in its pages (KIVI: the rest are in the ring)
  bool parked = false;
  bool hashable = true;
  std::vector<std::int32_t> tokens;  // known token ids
  std::vector<std::int32_t> blocks;  // saved block ids of its written pages, in order
  std::vector<std::byte> side;       // Format::side_bytes, or empty
};

// A checkpoint read (and, for a directory, its log applied). Its blocks
// are views of the file bytes they were read from: keep those alive while
// the image is used.
struct Image {
  Format format;
  std::vector<std::uint8_t> calibrated;  // per layer (calibrated codecs)
  std::vector<float> state;              // the codec's calibrated state
  std::map<std::int32_t, std::span<const std::byte>> blocks;
  std::vector<SavedSequence> sequences;
  std::vector<std::byte> app;      // the engine's own bytes, as saved
  std::int64_t records = 0;        // log records applied
  std::vector<std::string> notes;  // what was ignored (a torn log tail, a stale log)
};

// ---- writing ---------------------------------------------------------------------

// Where a writer's bytes go when they are not kept in memory: a file
// (checkpoint/files.hpp), written in order, with the section headers patched
// in place once their payload is known.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(std::span<const std::byte> bytes) = 0;
  virtual void write_at(std::uint64_t offset, std::span<const std::byte> bytes) = 0;
};

// Encodes into `out`; with a sink, `out` is only a staging buffer, handed on
// every few MiB, and large payloads (blocks) go to the sink straight from
// where they lie. Checksums are computed as the bytes pass (XXH3 streaming:
// the same value as over the whole payload).
class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out, Sink* sink = nullptr) : out_(out), sink_(sink) {}

  void file_header(FileKind kind) {
    raw(kMagic, sizeof(kMagic));
    u32(kVersion);
    u32(static_cast<std::uint32_t>(kind));
  }
  // A section: header now, length and checksum filled in by end_section.
  // Returns the header's offset in the file.
  std::uint64_t begin_section(std::uint32_t t) {
    const std::uint64_t at = position();
    u32(t);
    u32(0);
    u64(0);
    u64(0);
    XXH3_64bits_reset(&hash_);
    hashed_ = out_.size();
    return at;
  }
  void end_section(std::uint64_t at) {
    const std::uint64_t length = position() - (at + kSectionHeaderBytes);
    hash_pending();
    patch(at + 8, length);
    patch(at + 16, XXH3_64bits_digest(&hash_));
    ++sections_;
  }
  std::int64_t sections() const { return sections_; }
  // Bytes written so far (handed on or staged).
  std::uint64_t position() const { return flushed_ + out_.size(); }
  // Hands the staged bytes to the sink (a writer with one: call it last).
  void flush() {
    if (sink_ == nullptr || out_.empty()) return;
    hash_pending();
    sink_->write(out_);
    flushed_ += out_.size();
    out_.clear();
    hashed_ = 0;
  }

  void u8(std::uint8_t v) { raw(&v, 1); }
  void u32(std::uint32_t v) { little(v); }
  void u64(std::uint64_t v) { little(v); }
  void i64(std::int64_t v) { little(static_cast<std::uint64_t>(v)); }
  void i32s(std::span<const std::int32_t> values) {
    u64(values.size());
    for (std::int32_t v : values)
      u32(static_cast<std::uint32_t>(v));
  }
  void bytes(std::span<const std::byte> data) {
    u64(data.size());
    raw(data.data(), data.size());
  }
  // As bytes(), for payloads large enough to skip the staging buffer.
  void large(std::span<const std::byte> data) {
    if (sink_ == nullptr) return bytes(data);
    u64(data.size());
    flush();
    XXH3_64bits_update(&hash_, data.data(), data.size());
    sink_->write(data);
    flushed_ += data.size();
  }
  void string(std::string_view s) {
    bytes(std::as_bytes(std::span<const char>(s.data(), s.size())));
  }
  void floats(std::span<const float> values) {
    u64(values.size());
    for (float v : values) {
      std::uint32_t bits;
      std::memcpy(&bits, &v, 4);
      u32(bits);
    }
  }

 private:
  static constexpr std::size_t kStagingBytes = std::size_t{4} << 20;

  template <class T>
  void little(T v) {
    unsigned char b[sizeof(T)];
    for (std::size_t i = 0; i < sizeof(T); ++i)
      b[i] = static_cast<unsigned char>((v >> (8 * i)) & 0xffu);
    raw(b, sizeof(T));
  }
  void raw(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::byte*>(data);
    out_.insert(out_.end(), p, p + n);
    if (sink_ != nullptr && out_.size() >= kStagingBytes) flush();
  }
  // Writes a header field at file offset `at`: staged, or already handed on
  // (fields are staged whole, so one is never split between the two).
  void patch(std::uint64_t at, std::uint64_t v) {
    std::byte b[8];
    for (std::size_t i = 0; i < 8; ++i)
      b[i] = static_cast<std::byte>((v >> (8 * i)) & 0xffu);
    if (at >= flushed_) {
      std::memcpy(out_.data() + (at - flushed_), b, sizeof(b));
    } else {
      sink_->write_at(at, b);
    }
  }
  // Staged payload bytes not yet in the running checksum.
  void hash_pending() {
    if (hashed_ < out_.size())
      XXH3_64bits_update(&hash_, out_.data() + hashed_, out_.size() - hashed_);
    hashed_ = out_.size();
  }

  std::vector<std::byte>& out_;
  Sink* sink_;
  std::uint64_t flushed_ = 0;  // bytes handed to the sink
  std::size_t hashed_ = 0;     // staged bytes [0, hashed_) are in hash_ (or before the payload)
  XXH3_state_t hash_{};
  std::int64_t sections_ = 0;
};

inline void write_format(Writer& w, const Format& f) {
  const std::uint64_t at = w.begin_section(kFormatTag);
  w.u32(static_cast<std::uint32_t>(f.shape.num_layers));
  w.u32(static_cast<std::uint32_t>(f.shape.num_kv_heads));
  w.u32(static_cast<std::uint32_t>(f.shape.head_dim));
  w.u8(static_cast<std::uint8_t>(f.shape.dtype));
  w.u32(static_cast<std::uint32_t>(f.block_size));
  w.u8(f.layout);
  w.u8(f.codec_kind);
  w.string(f.codec);
  w.i64(f.bytes_per_block);
  w.i64(f.side_bytes);
  w.u64(f.generation);
  w.end_section(at);
}

inline void write_state(Writer& w, const std::vector<std::uint8_t>& calibrated,
                        const std::vector<float>& state) {
  const std::uint64_t at = w.begin_section(kStateTag);
  w.bytes(std::as_bytes(std::span<const std::uint8_t>(calibrated)));
  w.floats(state);
  w.end_section(at);
}

// Blocks as (id, bytes) pairs, at most kBlocksPerSection a section.
template <class Visit>
void write_blocks(Writer& w, std::span<const std::int32_t> ids, std::int64_t block_bytes,
                  Visit bytes_of) {
  for (std::size_t first = 0; first < ids.size(); first += kBlocksPerSection) {
    const std::size_t count = std::min<std::size_t>(kBlocksPerSection, ids.size() - first);
    const std::uint64_t at = w.begin_section(kBlocksTag);
    w.u64(count);
    w.i64(block_bytes);
    for (std::size_t i = first; i < first + count; ++i) {
      w.u32(static_cast<std::uint32_t>(ids[i]));
      w.large(bytes_of(ids[i]));
    }
    w.end_section(at);
  }
}

// Every live sequence; `from[i]`: the first known token written for
// sequences[i] (0 in a full checkpoint; a log record writes only the tokens
// from the last record's committed count on).
inline void write_sequences(Writer& w, std::span<const SavedSequence> sequences,
                            std::span<const std::int64_t> from) {
  const std::uint64_t at = w.begin_section(kSequencesTag);
  w.u64(sequences.size());
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    const SavedSequence& s = sequences[i];
    const std::int64_t first =
        from.empty() ? 0
                     : std::min<std::int64_t>(from[i], static_cast<std::int64_t>(s.tokens.size()));
    w.u64(s.id);
    w.i64(s.num_tokens);
    w.i64(s.paged_tokens);
    w.u8(static_cast<std::uint8_t>((s.parked ? 1u : 0u) | (s.hashable ? 2u : 0u)));
    w.i64(first);
    w.i32s(std::span<const std::int32_t>(s.tokens).subspan(static_cast<std::size_t>(first)));
    w.i32s(s.blocks);
    w.bytes(s.side);
  }
  w.end_section(at);
}

inline void write_app(Writer& w, std::span<const std::byte> app) {
  const std::uint64_t at = w.begin_section(kAppTag);
  w.bytes(app);
  w.end_section(at);
}

// ---- reading ---------------------------------------------------------------------

class Reader {
 public:
  Reader(std::span<const std::byte> bytes, std::size_t base, std::string section)
      : bytes_(bytes), base_(base), section_(std::move(section)) {}

  std::size_t remaining() const { return bytes_.size() - pos_; }
  bool done() const { return pos_ == bytes_.size(); }
  std::size_t offset() const { return base_ + pos_; }

  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(little(4)); }
  std::uint64_t u64() { return little(8); }
  std::int64_t i64() { return static_cast<std::int64_t>(little(8)); }
  // A count of items of at least `item_bytes` each: bounded by what is left.
  std::uint64_t count(std::size_t item_bytes, const char* what) {
    const std::size_t at = offset();
    const std::uint64_t n = u64();
    if (item_bytes > 0 && n > remaining() / item_bytes) {
      fail(at, "{} count {} needs more than the {} bytes left", what, n, remaining());
    }
    return n;
  }
  std::vector<std::int32_t> i32s(const char* what) {
    const std::uint64_t n = count(4, what);
    std::vector<std::int32_t> out(static_cast<std::size_t>(n));
    for (auto& v : out)
      v = static_cast<std::int32_t>(u32());
    return out;
  }
  std::vector<std::byte> bytes(const char* what) {
    const std::span<const std::byte> b = view(what);
    return {b.begin(), b.end()};
  }
  // As bytes(), without the copy: a view of the section's bytes.
  std::span<const std::byte> view(const char* what) {
    const std::uint64_t n = count(1, what);
    return take(static_cast<std::size_t>(n));
  }
  std::string string(const char* what, std::size_t most) {
    const std::size_t at = offset();
    const std::vector<std::byte> b = bytes(what);
    if (b.size() > most) fail(at, "{} of {} bytes (at most {})", what, b.size(), most);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  std::vector<float> floats(const char* what) {
    const std::uint64_t n = count(4, what);
    std::vector<float> out(static_cast<std::size_t>(n));
    for (float& v : out) {
      const std::uint32_t bits = u32();
      std::memcpy(&v, &bits, 4);
    }
    return out;
  }

  template <class... Args>
  [[noreturn]] void fail(std::size_t at, fmt::format_string<Args...> format, Args&&... args) const {
    detail::raise<CheckpointError>("checkpoint section {} at offset {}: {}", section_, at,
                                   fmt::format(format, std::forward<Args>(args)...));
  }

 private:
  std::span<const std::byte> take(std::size_t n) {
    if (n > remaining()) fail(offset(), "{} bytes needed, {} left in the section", n, remaining());
    const std::span<const std::byte> b = bytes_.subspan(pos_, n);
    pos_ += n;
    return b;
  }
  std::uint64_t little(std::size_t n) {
    const std::span<const std::byte> b = take(n);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i)
      v |= static_cast<std::uint64_t>(b[i]) << (8 * i);
    return v;
  }

  std::span<const std::byte> bytes_;
  std::size_t base_;
  std::size_t pos_ = 0;
  std::string section_;
};

// One section of a file, its checksum verified.
struct Section {
  std::uint32_t tag = 0;
  std::size_t offset = 0;  // of its header in the file
  std::span<const std::byte> payload;
  Reader reader() const { return Reader(payload, offset + kSectionHeaderBytes, tag_name(tag)); }
};

// Reads the section at `at`, or throws naming it and the offset.
inline Section read_section(std::span<const std::byte> file, std::size_t at) {
  Reader header(file.subspan(at, std::min(file.size() - at, kSectionHeaderBytes)), at, "header");
  if (file.size() - at < kSectionHeaderBytes)
    header.fail(at, "a section header needs {} bytes, {} left in the file", kSectionHeaderBytes,
                file.size() - at);
  Section s;
  s.tag = header.u32();
  s.offset = at;
  const std::uint32_t flags = header.u32();
  const std::uint64_t length = header.u64();
  const std::uint64_t sum = header.u64();
  const std::string name = tag_name(s.tag);
  if (flags != 0) {
    detail::raise<CheckpointError>("checkpoint section {} at offset {}: flags {} (allowed: 0)",
                                   name, at, flags);
  }
  const std::size_t left = file.size() - at - kSectionHeaderBytes;
  if (length > left) {
    detail::raise<CheckpointError>(
        "checkpoint section {} at offset {}: a payload of {} bytes, but {} left in the file", name,
        at, length, left);
  }
  s.payload = file.subspan(at + kSectionHeaderBytes, static_cast<std::size_t>(length));
  if (XXH3_64bits(s.payload.data(), s.payload.size()) != sum) {
    detail::raise<CheckpointError>(
        "checkpoint section {} at offset {}: checksum mismatch over its {} bytes (corrupt)", name,
        at, length);
  }
  return s;
}

// The file header: magic, version, kind.
inline FileKind read_file_header(std::span<const std::byte> file) {
  if (file.size() < kFileHeaderBytes) {
    detail::raise<CheckpointError>(
        "checkpoint header at offset 0: {} bytes, a checkpoint starts with {}", file.size(),
        kFileHeaderBytes);
  }
  if (std::memcmp(file.data(), kMagic, sizeof(kMagic)) != 0)
    detail::raise<CheckpointError>(
        "checkpoint header at offset 0: not a kvcache checkpoint (magic)");
  Reader r(file.subspan(8, 8), 8, "header");
  const std::uint32_t version = r.u32();
  if (version != kVersion) {
    detail::raise<CheckpointError>(
        "checkpoint header at offset 8: format version {} (this library reads version {})", version,
        kVersion);
  }
  const std::uint32_t kind = r.u32();
  if (kind != static_cast<std::uint32_t>(FileKind::kFull) &&
      kind != static_cast<std::uint32_t>(FileKind::kLog)) {
    detail::raise<CheckpointError>("checkpoint header at offset 12: kind {} (1: full, 2: log)",
                                   kind);
  }
  return static_cast<FileKind>(kind);
}

inline Format read_format(const Section& section) {
  Reader r = section.reader();
  Format f;
  const std::size_t at = r.offset();
  const std::uint32_t layers = r.u32(), heads = r.u32(), dim = r.u32();
  const std::uint8_t dtype = r.u8();
  if (layers < 1 || layers > 4096 || heads < 1 || heads > 1024 || dim < 1 || dim > 1024 ||
      dtype > 2) {
    r.fail(at,
           "model shape {} layers x {} heads x {} of dtype {} (layers up to 4096, heads and "
           "head_dim up to 1024, dtype 0..2)",
           layers, heads, dim, dtype);
  }
  f.shape = ModelShape::gqa(static_cast<std::int32_t>(layers), static_cast<std::int32_t>(heads),
                            static_cast<std::int32_t>(dim), static_cast<DType>(dtype));
  const std::size_t block_at = r.offset();
  const std::uint32_t block = r.u32();
  if (block < 1 || block > 1024) r.fail(block_at, "block size {} (allowed: 1 to 1024)", block);
  f.block_size = static_cast<std::int32_t>(block);
  f.layout = r.u8();
  f.codec_kind = r.u8();
  if (f.layout > 1 || f.codec_kind > 4)
    r.fail(block_at + 4, "layout {} and codec kind {} (layout 0..1, kind 0..4)", f.layout,
           f.codec_kind);
  f.codec = r.string("codec name", 256);
  const std::size_t bytes_at = r.offset();
  f.bytes_per_block = r.i64();
  f.side_bytes = r.i64();
  if (f.bytes_per_block < 1 || f.bytes_per_block > (std::int64_t{1} << 40) || f.side_bytes < 0 ||
      f.side_bytes > (std::int64_t{1} << 40)) {
    r.fail(bytes_at, "{} bytes a block and {} beside each sequence (1 to 2^40, 0 to 2^40)",
           f.bytes_per_block, f.side_bytes);
  }
  f.generation = r.u64();
  if (!r.done()) r.fail(r.offset(), "{} bytes past the end of the format", r.remaining());
  return f;
}

inline void read_state(const Section& section, Image& image) {
  Reader r = section.reader();
  const std::vector<std::byte> layers = r.bytes("calibrated layers");
  if (static_cast<std::int64_t>(layers.size()) != image.format.shape.num_layers)
    r.fail(section.offset, "{} calibration flags for {} layers", layers.size(),
           image.format.shape.num_layers);
  image.calibrated.resize(layers.size());
  std::memcpy(image.calibrated.data(), layers.data(), layers.size());
  image.state = r.floats("state floats");
  if (!r.done()) r.fail(r.offset(), "{} bytes past the end of the state", r.remaining());
}

inline void read_blocks(const Section& section, Image& image) {
  Reader r = section.reader();
  const std::int64_t block_bytes = image.format.bytes_per_block;
  const std::uint64_t n = r.count(static_cast<std::size_t>(block_bytes) + 12, "block");
  const std::size_t bytes_at = r.offset();
  if (r.i64() != block_bytes)
    r.fail(bytes_at, "blocks of another size than the format's {} bytes", block_bytes);
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::size_t at = r.offset();
    const auto id = static_cast<std::int32_t>(r.u32());
    if (id < 0) r.fail(at, "block id {} (allowed: 0 to 2^31 - 1)", id);
    const std::span<const std::byte> b = r.view("block bytes");
    if (static_cast<std::int64_t>(b.size()) != block_bytes)
      r.fail(at, "block {} of {} bytes (the format's: {})", id, b.size(), block_bytes);
    image.blocks[id] = b;
  }
  if (!r.done()) r.fail(r.offset(), "{} bytes past the last block", r.remaining());
}

// A SEQ section: the live sequences. In a log record, a sequence's tokens
// continue what the image already holds for it from `first` on; sequences
// the section does not list are gone. Blocks may be in the image or, for a
// record, among the record's own (`more`).
inline void read_sequences(
    const Section& section, Image& image,
    const std::map<std::int32_t, std::span<const std::byte>>* more = nullptr) {
  Reader r = section.reader();
  const std::uint64_t n = r.count(57, "sequence");
  std::map<std::uint64_t, SavedSequence> previous;
  for (SavedSequence& s : image.sequences)
    previous[s.id] = std::move(s);
  std::vector<SavedSequence> sequences;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::size_t at = r.offset();
    SavedSequence s;
    s.id = r.u64();
    s.num_tokens = r.i64();
    s.paged_tokens = r.i64();
    const std::uint8_t flags = r.u8();
    if (flags > 3) r.fail(at + 24, "sequence {} flags {} (allowed: 0..3)", s.id, flags);
    s.parked = (flags & 1u) != 0;
    s.hashable = (flags & 2u) != 0;
    const std::int64_t first = r.i64();
    std::vector<std::int32_t> tokens = r.i32s("token");
    s.blocks = r.i32s("block id");
    s.side = r.bytes("side bytes");
    auto old = previous.find(s.id);
    const std::int64_t have =
        old == previous.end() ? 0 : static_cast<std::int64_t>(old->second.tokens.size());
    if (first < 0 || first > have) {
      r.fail(at, "sequence {} continues its tokens from {} but {} are known", s.id, first, have);
    }
    if (old != previous.end()) {
      s.tokens = std::move(old->second.tokens);
      // A log record leaves out a ring that did not change.
      if (s.side.empty()) s.side = std::move(old->second.side);
    }
    s.tokens.resize(static_cast<std::size_t>(first));
    s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
    const std::int64_t pages =
        (s.paged_tokens + image.format.block_size - 1) / image.format.block_size;
    if (s.num_tokens < 0 || s.paged_tokens < 0 || s.paged_tokens > s.num_tokens ||
        static_cast<std::int64_t>(s.blocks.size()) != pages) {
      r.fail(at, "sequence {}: {} tokens, {} in pages, {} blocks (a block per {} paged tokens)",
             s.id, s.num_tokens, s.paged_tokens, s.blocks.size(), image.format.block_size);
    }
    if (!s.side.empty() && static_cast<std::int64_t>(s.side.size()) != image.format.side_bytes) {
      r.fail(at, "sequence {}: {} side bytes (the format's: {})", s.id, s.side.size(),
             image.format.side_bytes);
    }
    for (std::int32_t b : s.blocks) {
      if (image.blocks.count(b) == 0 && (more == nullptr || more->count(b) == 0))
        r.fail(at, "sequence {} names block {}, never saved", s.id, b);
    }
    sequences.push_back(std::move(s));
  }
  if (!r.done()) r.fail(r.offset(), "{} bytes past the last sequence", r.remaining());
  image.sequences = std::move(sequences);
}

inline void read_app(const Section& section, Image& image) {
  Reader r = section.reader();
  image.app = r.bytes("engine bytes");
  if (!r.done()) r.fail(r.offset(), "{} bytes past the engine's", r.remaining());
}

// A full checkpoint, read and checked whole.
inline Image read_full(std::span<const std::byte> file) {
  if (read_file_header(file) != FileKind::kFull) {
    detail::raise<CheckpointError>("checkpoint header at offset 12: a log, not a full checkpoint");
  }
  Image image;
  std::size_t at = kFileHeaderBytes;
  Section first = read_section(file, at);
  if (first.tag != kFormatTag) {
    detail::raise<CheckpointError>("checkpoint section {} at offset {}: expected FMT first",
                                   tag_name(first.tag), at);
  }
  image.format = read_format(first);
  at += kSectionHeaderBytes + first.payload.size();
  std::int64_t sections = 1;
  bool ended = false, have_sequences = false;
  while (at < file.size()) {
    const Section s = read_section(file, at);
    const std::size_t next = at + kSectionHeaderBytes + s.payload.size();
    ++sections;
    if (s.tag == kStateTag) {
      read_state(s, image);
    } else if (s.tag == kBlocksTag) {
      read_blocks(s, image);
    } else if (s.tag == kSequencesTag) {
      read_sequences(s, image);
      have_sequences = true;
    } else if (s.tag == kAppTag) {
      read_app(s, image);
    } else if (s.tag == kEndTag) {
      Reader r = s.reader();
      const std::uint64_t count = r.u64();
      if (!r.done() || static_cast<std::int64_t>(count) != sections || next != file.size()) {
        r.fail(s.offset, "the end says {} sections, {} were read, {} bytes follow it", count,
               sections, file.size() - next);
      }
      ended = true;
    } else {
      detail::raise<CheckpointError>("checkpoint section {} at offset {}: unknown in a checkpoint",
                                     tag_name(s.tag), at);
    }
    at = next;
  }
  if (!ended || !have_sequences) {
    detail::raise<CheckpointError>(
        "checkpoint at offset {}: the file ends before its {} section (truncated)", at,
        have_sequences ? "END" : "SEQ");
  }
  return image;
}

// Applies a log's records to `image` (its full checkpoint) up to the last
// good one; a record cut short or unreadable ends the log there, and a note
// says what was ignored. A log of another generation is ignored whole.
inline void apply_log(std::span<const std::byte> file, Image& image) {
  if (read_file_header(file) != FileKind::kLog) {
    detail::raise<CheckpointError>("checkpoint log header at offset 12: not a log");
  }
  const Section first = read_section(file, kFileHeaderBytes);
  if (first.tag != kFormatTag) {
    detail::raise<CheckpointError>("checkpoint log section {} at offset {}: expected FMT first",
                                   tag_name(first.tag), kFileHeaderBytes);
  }
  const Format format = read_format(first);
  if (format.generation != image.format.generation) {
    image.notes.push_back(
        fmt::format("the log follows another checkpoint (generation {:016x}, not {:016x}): ignored",
                    format.generation, image.format.generation));
    return;
  }
  std::size_t at = kFileHeaderBytes + kSectionHeaderBytes + first.payload.size();
  std::int64_t record = 0;
  while (at < file.size()) {
    // A record is read aside (its blocks apart from the image's) and kept
    // only once its CMT checks out.
    Image next;
    next.format = image.format;
    next.sequences = image.sequences;
    next.calibrated = image.calibrated;
    next.state = image.state;
    next.app = image.app;
    std::size_t cursor = at;
    bool committed = false;
    try {
      while (cursor < file.size() && !committed) {
        const Section s = read_section(file, cursor);
        cursor += kSectionHeaderBytes + s.payload.size();
        if (s.tag == kBlocksTag) {
          read_blocks(s, next);
        } else if (s.tag == kSequencesTag) {
          read_sequences(s, next, &image.blocks);  // next.blocks: the record's own
        } else if (s.tag == kAppTag) {
          read_app(s, next);
        } else if (s.tag == kStateTag) {
          read_state(s, next);
        } else if (s.tag == kCommitTag) {
          Reader r = s.reader();
          const std::uint64_t number = r.u64();
          if (!r.done() || static_cast<std::int64_t>(number) != record + 1)
            r.fail(s.offset, "record {} where {} was due", number, record + 1);
          committed = true;
        } else {
          detail::raise<CheckpointError>("checkpoint log section {} at offset {}: unknown",
                                         tag_name(s.tag), s.offset);
        }
      }
    } catch (const CheckpointError& error) {
      image.notes.push_back(fmt::format(
          "log record {} at offset {} is torn or unreadable ({}); restored through record {}, "
          "{} bytes after it ignored",
          record + 1, at, error.what(), record, file.size() - at));
      return;
    }
    if (!committed) {
      image.notes.push_back(fmt::format(
          "log record {} at offset {} ends before its commit (a torn append); restored through "
          "record {}, {} bytes ignored",
          record + 1, at, record, file.size() - at));
      return;
    }
    for (const auto& [id, bytes] : next.blocks)
      image.blocks[id] = bytes;
    image.sequences = std::move(next.sequences);
    image.calibrated = std::move(next.calibrated);
    image.state = std::move(next.state);
    image.app = std::move(next.app);
    ++record;
    image.records = record;
    at = cursor;
  }
}

}  // namespace checkpoint
}  // namespace kvcache
