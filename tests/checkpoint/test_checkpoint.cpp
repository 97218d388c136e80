// Checkpoint and restore: every codec and allocation strategy round-trips a
// cache filled with fresh random rows (sequences, token counts, parked
// state, shared blocks stored once, prompt keys), into another block size,
// layout and allocation too; a checkpoint cut at every byte, or with any
// single bit flipped, is refused naming the section and offset, the target
// unchanged; another model shape, codec or format version is refused naming
// what differs; periodic records append only what changed, and a torn log
// tail is ignored up to its last good record.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "checkpoint_support.hpp"

namespace kvcache::testing {
namespace {

namespace fs = std::filesystem;

fs::path scratch_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("kvcache-ckpt-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

CacheConfig small_config(std::int32_t block_size = 4, DType dtype = DType::kF16,
                         KVLayout layout = KVLayout::kNHD, std::int64_t blocks = 48) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 16, dtype);
  c.block_size = block_size;
  c.num_blocks = blocks;
  c.layout = layout;
  c.max_batch_tokens = 256;
  c.max_batch_sequences = 8;
  c.max_sequences = 16;
  c.initial_tokens = 8;  // dynamic regions start small
  return c;
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

template <class Manager>
std::vector<SeqId> mapped(const RestoreReport& report, const std::vector<SeqId>& seqs) {
  std::vector<SeqId> out;
  for (SeqId s : seqs)
    out.push_back(report.ids.at(s));
  return out;
}

template <class PolicyT>
struct Case {
  using Policy = PolicyT;
};

template <class C>
class CheckpointRoundTrip : public ::testing::Test {
 protected:
  using PolicyType = typename C::Policy;
  using ManagerType = KVCacheManager<PolicyType, HostBackend>;
};

TYPED_TEST_SUITE_P(CheckpointRoundTrip);

TYPED_TEST_P(CheckpointRoundTrip, EverySequenceComesBackAsItWas) {
  using Manager = typename TestFixture::ManagerType;
  using Policy = typename TestFixture::PolicyType;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Manager original(small_config());
  StepDriver<Manager> driver(original, seed);
  const std::vector<SeqId> seqs = fill(original, driver);
  const fs::path dir = scratch_dir("roundtrip");
  const std::string app = "engine state 42";
  save_checkpoint(original, dir / "c.kvc", bytes_of(app));
  Manager restored(small_config());
  const RestoreReport report = restore_checkpoint(restored, dir / "c.kvc");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(report.app.data()), report.app.size()), app);
  ASSERT_EQ(report.ids.size(), seqs.size());
  EXPECT_FALSE(report.relaid_out);
  const std::vector<SeqId> again = mapped<Manager>(report, seqs);
  for (std::size_t i = 0; i < seqs.size(); ++i)
    EXPECT_EQ(held(restored, again[i]), held(original, seqs[i])) << "sequence " << seqs[i];
  // Shared blocks were stored once and come back shared.
  EXPECT_EQ(distinct_blocks(restored, again), distinct_blocks(original, seqs));
  ASSERT_NO_THROW(restored.check_invariants());
  if constexpr (Policy::sharing::kEnabled) {
    // Prompt keys: a prompt sharing the first one's prefix finds as much in both.
    std::vector<std::int32_t> prompt;
    for (std::int32_t i = 0; i < 3 * original.block_size() + 2; ++i)
      prompt.push_back(100 + i);
    const SeqId a = original.create_sequence(prompt);
    const SeqId b = restored.create_sequence(prompt);
    EXPECT_GT(original.sequence(a).num_tokens, 0);
    EXPECT_EQ(restored.sequence(b).num_tokens, original.sequence(a).num_tokens);
  }
  // The restored cache goes on like the original.
  StepDriver<Manager> next(restored, seed + 1);
  EXPECT_TRUE(next.step({again[0]}, {3}));
  EXPECT_EQ(restored.sequence(again[0]).num_tokens, original.sequence(seqs[0]).num_tokens + 3);
  fs::remove_all(dir);
}

// Periodic records: each appends the blocks written since the last, and a
// restore of the directory gives back the state of the last record.
TYPED_TEST_P(CheckpointRoundTrip, RecordsAppendWhatChangedAndRestore) {
  using Manager = typename TestFixture::ManagerType;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const fs::path dir = scratch_dir("records");
  const CacheConfig config = small_config(4, DType::kF16, KVLayout::kNHD, 256);
  Manager original(config);
  StepDriver<Manager> driver(original, seed);
  CheckpointDirectory<Manager> periodic(original, dir, 8);
  std::vector<SeqId> seqs = fill(original, driver);
  for (std::int32_t i = 0; i < 3; ++i) {  // long sequences nothing appends to later
    const SeqId s = original.create_sequence();
    ASSERT_TRUE(driver.step({s}, {40}));
    seqs.push_back(s);
  }
  ASSERT_TRUE(periodic.step(bytes_of("0")));  // the first: a full checkpoint
  EXPECT_EQ(periodic.records(), 0);
  const auto full = fs::file_size(periodic.full_path());
  for (int round = 1; round <= 4; ++round) {
    const auto before = fs::file_size(periodic.log_path());
    ASSERT_TRUE(driver.step({seqs[0], seqs[1]}, {3, 6}));
    ASSERT_TRUE(periodic.step(bytes_of(std::to_string(round))));
    // A record carries the blocks those 9 tokens touched, not the cache.
    EXPECT_LT(fs::file_size(periodic.log_path()) - before, full / 3) << "round " << round;
  }
  EXPECT_EQ(periodic.records(), 4);
  std::vector<HeldSequence> want;
  for (SeqId s : seqs)
    want.push_back(held(original, s));
  Manager restored(config);
  CheckpointDirectory<Manager> reopened(restored, dir, 8);
  const std::optional<RestoreReport> report = reopened.restore();
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->records, 4);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(report->app.data()), report->app.size()),
            "4");
  for (std::size_t i = 0; i < seqs.size(); ++i)
    EXPECT_EQ(held(restored, report->ids.at(seqs[i])), want[i]) << "sequence " << seqs[i];
  ASSERT_NO_THROW(restored.check_invariants());
  fs::remove_all(dir);
}

REGISTER_TYPED_TEST_SUITE_P(CheckpointRoundTrip, EverySequenceComesBackAsItWas,
                            RecordsAppendWhatChangedAndRestore);

using RoundTripCases = ::testing::Types<
    Case<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>,
    Case<CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing>>,
    Case<CachePolicy<DynamicAllocation, LruEviction, NoPrefixSharing>>,
    Case<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, Int8Codec<8>>>,
    Case<CachePolicy<DynamicAllocation, NoEviction, NoPrefixSharing, Int8Codec<8, 4>>>,
    Case<CachePolicy<PagedAllocation, S3FifoEviction, PrefixSharing, Fp8Codec<Fp8Scale::kPerHead>>>,
    Case<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, KiviCodec<4, 4, 8>>>,
    Case<CachePolicy<DynamicAllocation, LruEviction, NoPrefixSharing, KiviCodec<2, 4, 4>>>,
    Case<CachePolicy<PagedAllocation, LfuAgingEviction, PrefixSharing, LowRankCodec<4>>>>;

struct CaseNames {
  template <class C>
  static std::string GetName(int) {
    using P = typename C::Policy;
    std::string name = std::string(P::allocation::kName) + "_" + std::string(P::eviction::kName) +
                       (P::sharing::kEnabled ? "_prefix_" : "_") + P::codec::name();
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    return name;
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Cpu, CheckpointRoundTrip, RoundTripCases, CaseNames);

// ---- the streamed writer -------------------------------------------------------

// A sink that keeps what it is given, as a file would.
class MemorySink final : public checkpoint::Sink {
 public:
  void write(std::span<const std::byte> b) override {
    bytes.insert(bytes.end(), b.begin(), b.end());
    ++writes;
  }
  void write_at(std::uint64_t at, std::span<const std::byte> b) override {
    ASSERT_LE(at + b.size(), bytes.size()) << "a patch past what was written";
    std::copy(b.begin(), b.end(), bytes.begin() + static_cast<std::ptrdiff_t>(at));
    ++patches;
  }
  std::vector<std::byte> bytes;
  int writes = 0, patches = 0;
};

std::vector<std::byte> random_payload(std::mt19937_64& rng, std::size_t most) {
  std::vector<std::byte> b(rng() % (most + 1));
  for (auto& x : b)
    x = static_cast<std::byte>(rng());
  return b;
}

// Random sections of random items, past the staging buffer's few MiB: the
// streamed writer hands a sink exactly the bytes the in-memory one keeps,
// headers patched wherever they had gone, every checksum right.
TEST(CheckpointWriter, StreamedBytesEqualTheInMemoryOnes) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<std::byte> memory, staging;
  MemorySink sink;
  checkpoint::Writer a(memory), b(staging, &sink);
  a.file_header(checkpoint::FileKind::kFull);
  b.file_header(checkpoint::FileKind::kFull);
  for (int section = 0; section < 24; ++section) {
    const std::uint32_t tag = checkpoint::kBlocksTag + static_cast<std::uint32_t>(section);
    const std::uint64_t at = a.begin_section(tag);
    ASSERT_EQ(b.begin_section(tag), at);
    const int items = static_cast<int>(rng() % 300);
    for (int i = 0; i < items; ++i) {
      const std::uint64_t v = rng();
      switch (rng() % 6) {
        case 0:
          a.u8(static_cast<std::uint8_t>(v)), b.u8(static_cast<std::uint8_t>(v));
          break;
        case 1:
          a.u32(static_cast<std::uint32_t>(v)), b.u32(static_cast<std::uint32_t>(v));
          break;
        case 2:
          a.u64(v), b.u64(v);
          break;
        case 3: {
          const auto p = random_payload(rng, 16 << 10);
          a.bytes(p), b.bytes(p);
          break;
        }
        case 4: {
          const auto p = random_payload(rng, 256 << 10);
          a.large(p), b.large(p);
          break;
        }
        default: {
          const std::vector<std::int32_t> ids(rng() % 64, static_cast<std::int32_t>(v));
          a.i32s(ids), b.i32s(ids);
        }
      }
    }
    a.end_section(at);
    b.end_section(at);
  }
  b.flush();
  EXPECT_EQ(b.position(), memory.size());
  ASSERT_EQ(sink.bytes.size(), memory.size());
  EXPECT_TRUE(sink.bytes == memory) << "the streamed bytes differ";
  EXPECT_GT(memory.size(), std::size_t{8} << 20) << "past the staging buffer";
  EXPECT_GT(sink.patches, 0);
  EXPECT_EQ(staging.size(), 0u);
  std::size_t offset = checkpoint::kFileHeaderBytes;
  int sections = 0;
  while (offset < memory.size()) {
    const checkpoint::Section s = checkpoint::read_section(memory, offset);
    offset += checkpoint::kSectionHeaderBytes + s.payload.size();
    ++sections;
  }
  EXPECT_EQ(sections, 24);
}

// A checkpoint written to a file (blocks straight from the pages) is the
// one encoded in memory, byte for byte, and leaves no temporary behind.
TEST(CheckpointWriter, AFileCheckpointIsTheEncodedOne) {
  using Manager = KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Manager m(small_config());
  StepDriver<Manager> driver(m, seed);
  (void)fill(m, driver);
  const fs::path dir = scratch_dir("file");
  const std::int64_t size = checkpoint::write_full_file(m, dir / "c.kvc", {}, bytes_of("app"), 77);
  const std::vector<std::byte> encoded = checkpoint::encode_full(m, {}, bytes_of("app"), 77);
  EXPECT_EQ(size, static_cast<std::int64_t>(encoded.size()));
  EXPECT_TRUE(checkpoint::read_file(dir / "c.kvc") == encoded);
  EXPECT_FALSE(fs::exists(dir / "c.kvc.tmp"));
  fs::remove_all(dir);
}

// A file never committed (a writer that failed half way) leaves the old
// checkpoint whole and no temporary.
TEST(CheckpointWriter, AnUncommittedFileLeavesTheOldOne) {
  const fs::path dir = scratch_dir("uncommitted");
  checkpoint::write_file_atomic(dir / "c.kvc", bytes_of("the old checkpoint"));
  {
    checkpoint::AtomicFile file(dir / "c.kvc");
    file.write(bytes_of("half of a new one"));
  }
  const std::vector<std::byte> kept = checkpoint::read_file(dir / "c.kvc");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(kept.data()), kept.size()),
            "the old checkpoint");
  EXPECT_FALSE(fs::exists(dir / "c.kvc.tmp"));
  fs::remove_all(dir);
}

// ---- another geometry ----------------------------------------------------------

// Rows move into pages of another size, another layout, another allocation.
template <class Source, class Target>
void expect_relaid_out(const CacheConfig& from, const CacheConfig& to) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Source original(from);
  StepDriver<Source> driver(original, seed);
  const std::vector<SeqId> seqs = fill(original, driver);
  const fs::path dir = scratch_dir("relayout");
  save_checkpoint(original, dir / "c.kvc");
  Target restored(to);
  const RestoreReport report = restore_checkpoint(restored, dir / "c.kvc");
  for (SeqId s : seqs)
    EXPECT_EQ(held(restored, report.ids.at(s)), held(original, s)) << "sequence " << s;
  ASSERT_NO_THROW(restored.check_invariants());
  fs::remove_all(dir);
}

TEST(CheckpointRelayout, AnotherBlockSizeLayoutOrAllocationTakesTheRows) {
  using Paged = KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>;
  using Dynamic = KVCacheManager<CachePolicy<DynamicAllocation, LruEviction, NoPrefixSharing>>;
  expect_relaid_out<Paged, Paged>(small_config(4), small_config(16));
  expect_relaid_out<Paged, Paged>(small_config(16),
                                  small_config(2, DType::kF16, KVLayout::kNHD, 200));
  expect_relaid_out<Paged, Paged>(small_config(4), small_config(8, DType::kF16, KVLayout::kHND));
  expect_relaid_out<Paged, Dynamic>(small_config(4), small_config(8));
  using Int8 =
      KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, Int8Codec<8>>>;
  expect_relaid_out<Int8, Int8>(small_config(4), small_config(32));
  using LowRank =
      KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, LowRankCodec<4>>>;
  expect_relaid_out<LowRank, LowRank>(small_config(8), small_config(4));
}

// ---- refusals -------------------------------------------------------------------

using Plain = KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>;

// A small checkpoint of fresh rows, as bytes.
std::vector<std::byte> small_checkpoint(std::uint64_t seed) {
  Plain m(small_config(4, DType::kF16, KVLayout::kNHD, 16));
  StepDriver<Plain> driver(m, seed);
  const SeqId a = m.create_sequence(std::vector<std::int32_t>{1, 2, 3, 4, 5, 6});
  EXPECT_TRUE(driver.step({a}, {6}));
  const SeqId b = m.create_sequence(std::vector<std::int32_t>{1, 2, 3, 4, 9});
  EXPECT_TRUE(driver.step({b}, {1}));
  return checkpoint::encode_full(m, {}, bytes_of("app"), 77);
}

// Every prefix of a checkpoint is refused, naming where it broke, and the
// target cache stays as it was; the whole file restores.
TEST(CheckpointFaults, ATruncatedCheckpointIsRefusedAtEveryByte) {
  const std::vector<std::byte> file = small_checkpoint(test_seed());
  Plain target(small_config(4, DType::kF16, KVLayout::kNHD, 16));
  const MemoryStats before = target.memory();
  std::int64_t refused = 0;
  for (std::size_t cut = 0; cut < file.size(); ++cut) {
    const std::span<const std::byte> prefix(file.data(), cut);
    try {
      (void)checkpoint::restore_image(target, checkpoint::read_full(prefix));
      ADD_FAILURE() << "a checkpoint cut at " << cut << " of " << file.size() << " restored";
    } catch (const CheckpointError& error) {
      const std::string what = error.what();
      ASSERT_NE(what.find("offset"), std::string::npos) << what;
      ++refused;
    }
    ASSERT_EQ(target.num_sequences(), 0);
  }
  EXPECT_EQ(refused, static_cast<std::int64_t>(file.size()));
  const MemoryStats after = target.memory();
  EXPECT_EQ(after.free_blocks, before.free_blocks);
  EXPECT_EQ(after.cached_blocks, before.cached_blocks);
  const RestoreReport whole = checkpoint::restore_image(target, checkpoint::read_full(file));
  EXPECT_EQ(whole.ids.size(), 2u);
}

// Any single bit flipped anywhere in the file is caught (a header field's
// check, a section's bound or checksum), and the target stays as it was.
TEST(CheckpointFaults, EverySingleBitFlipIsCaught) {
  const std::vector<std::byte> file = small_checkpoint(test_seed());
  Plain target(small_config(4, DType::kF16, KVLayout::kNHD, 16));
  std::int64_t caught = 0;
  std::map<std::string, std::int64_t> by_section;
  for (std::size_t at = 0; at < file.size(); ++at) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<std::byte> bad = file;
      bad[at] ^= static_cast<std::byte>(1u << bit);
      try {
        (void)checkpoint::restore_image(target, checkpoint::read_full(bad));
        ADD_FAILURE() << "bit " << bit << " of byte " << at << " flipped went unnoticed";
        return;
      } catch (const CheckpointError& error) {
        const std::string what = error.what();
        ++caught;
        ++by_section[what.substr(0, what.find(" at offset"))];
      }
      ASSERT_EQ(target.num_sequences(), 0);
    }
  }
  EXPECT_EQ(caught, static_cast<std::int64_t>(file.size() * 8));
  EXPECT_GE(by_section.size(), 4u) << "errors name the header and the sections";
}

TEST(CheckpointFaults, AnotherShapeCodecOrVersionIsRefusedNamingIt) {
  const std::vector<std::byte> file = small_checkpoint(test_seed());
  CacheConfig wider = small_config(4, DType::kF16, KVLayout::kNHD, 16);
  wider.shape = ModelShape::gqa(2, 4, 16, DType::kF16);
  Plain other_shape(wider);
  EXPECT_TRUE(throws_with<CheckpointError>(
      [&] { checkpoint::restore_image(other_shape, checkpoint::read_full(file)); },
      {"2 layers x 2 KV heads x 16", "2 layers x 4 x 16"}));
  KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, Int8Codec<8>>> int8(
      small_config(4, DType::kF16, KVLayout::kNHD, 16));
  EXPECT_TRUE(throws_with<CheckpointError>(
      [&] { checkpoint::restore_image(int8, checkpoint::read_full(file)); },
      {"codec is plain", "int8"}));
  Plain bf16(small_config(4, DType::kBF16, KVLayout::kNHD, 16));
  EXPECT_TRUE(throws_with<CheckpointError>(
      [&] { checkpoint::restore_image(bf16, checkpoint::read_full(file)); }, {"fp16", "bf16"}));
  std::vector<std::byte> future = file;
  future[8] = std::byte{2};  // version 2
  EXPECT_TRUE(throws_with<CheckpointError>([&] { (void)checkpoint::read_full(future); },
                                           {"format version 2", "reads version 1"}));
  // A cache that holds sequences is not a restore target.
  Plain busy(small_config(4, DType::kF16, KVLayout::kNHD, 16));
  (void)busy.create_sequence();
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] { checkpoint::restore_image(busy, checkpoint::read_full(file)); },
      {"holds 1 sequences"}));
  // A pool too small for it: refused, the target unchanged.
  Plain tiny(small_config(4, DType::kF16, KVLayout::kNHD, 2));
  EXPECT_TRUE(throws_with<OutOfMemory>(
      [&] { checkpoint::restore_image(tiny, checkpoint::read_full(file)); }, {"needs 3 blocks"}));
  EXPECT_EQ(tiny.num_sequences(), 0);
  EXPECT_EQ(tiny.num_free_blocks(), 2);
}

// A log cut at every byte: the restore gives the state of the last record
// the cut left whole, and says what it ignored.
TEST(CheckpointFaults, ATornLogRestoresItsLastGoodRecord) {
  const std::uint64_t seed = test_seed();
  const fs::path dir = scratch_dir("torn");
  Plain original(small_config());
  StepDriver<Plain> driver(original, seed);
  CheckpointDirectory<Plain> periodic(original, dir, 1);
  const SeqId a = original.create_sequence(std::vector<std::int32_t>{7, 8, 9});
  ASSERT_TRUE(driver.step({a}, {3}));
  const SeqId bulk = original.create_sequence();  // keeps the log below the full checkpoint
  ASSERT_TRUE(driver.step({bulk}, {96}));
  ASSERT_TRUE(periodic.step());
  std::vector<HeldSequence> states = {held(original, a)};
  std::vector<std::uintmax_t> ends = {fs::file_size(periodic.log_path())};
  for (int round = 0; round < 4; ++round) {
    ASSERT_TRUE(driver.step({a}, {2 + round}));
    ASSERT_TRUE(periodic.step());
    states.push_back(held(original, a));
    ends.push_back(fs::file_size(periodic.log_path()));
  }
  const std::vector<std::byte> full = checkpoint::read_file(periodic.full_path());
  const std::vector<std::byte> log = checkpoint::read_file(periodic.log_path());
  ASSERT_EQ(periodic.records(), 4) << "no compaction in between";
  for (std::size_t cut = static_cast<std::size_t>(ends[0]); cut <= log.size(); ++cut) {
    checkpoint::Image image = checkpoint::read_full(full);
    checkpoint::apply_log(std::span<const std::byte>(log.data(), cut), image);
    std::size_t good = 0;
    while (good + 1 < ends.size() && ends[good + 1] <= cut)
      ++good;
    ASSERT_EQ(image.records, static_cast<std::int64_t>(good)) << "cut at " << cut;
    if (cut != ends[good]) {
      ASSERT_EQ(image.notes.size(), 1u) << "cut at " << cut;
      ASSERT_NE(image.notes[0].find("restored through record " + std::to_string(good)),
                std::string::npos)
          << image.notes[0];
    }
    if (cut % 7 == 0 || cut == ends[good]) {
      Plain restored(small_config());
      const RestoreReport report = checkpoint::restore_image(restored, image);
      ASSERT_EQ(held(restored, report.ids.at(a)), states[good]) << "cut at " << cut;
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kvcache::testing
