// kvcache-demo: the cache checked end to end through a real decode loop
// (cached logits are bit-for-bit those of a recompute without a cache), the
// demo's figures against the sizing calculator, the checkpoint loader and
// the command line refusing what they must.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "model.hpp"
#include "report.hpp"
#include "serve.hpp"

namespace kvcache::demo {
namespace {

// A fresh seed per test (KVCACHE_TEST_SEED replays one), printed.
std::uint64_t seed() {
  static const std::uint64_t value = [] {
    const std::uint64_t s = kvcache::testing::test_seed();
    std::printf("demo tests: seed %llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return value;
}

ModelConfig tiny_config() {
  ModelConfig c;
  c.dim = 256;  // head_dim 64, as every codec takes it
  c.hidden_dim = 192;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.vocab_size = 257;
  return c;
}

// Conversations sharing a system prompt, each turn extending the last.
replay::Trace chat_trace(std::uint64_t seed, std::int32_t conversations) {
  std::mt19937_64 rng(seed);
  replay::Trace trace;
  trace.source = "test";
  std::int64_t next = 1000;
  for (std::int32_t c = 0; c < conversations; ++c) {
    std::vector<std::int64_t> ids = {static_cast<std::int64_t>(rng() % 2)};  // system prompt
    for (int turn = 0; turn < 3; ++turn) {
      for (std::uint64_t i = 0, n = 1 + rng() % 2; i < n; ++i)
        ids.push_back(next++);
      replay::TraceRequest r;
      r.hash_ids = ids;
      r.input_length =
          static_cast<std::int64_t>(ids.size()) * 512 - static_cast<std::int64_t>(rng() % 300);
      r.output_length = 16 + static_cast<std::int64_t>(rng() % 80);
      trace.requests.push_back(r);
    }
  }
  return trace;
}

WorkloadOptions small_workload() {
  WorkloadOptions w;
  w.requests = 9;
  w.prompt_scale = 64;  // 8 tokens per hash block
  w.output_scale = 4;
  w.max_output = 20;
  return w;
}

void expect_same_logits(const Outputs& a, const Outputs& b, const char* what) {
  ASSERT_EQ(a.tokens.size(), b.tokens.size());
  for (std::size_t r = 0; r < a.tokens.size(); ++r) {
    ASSERT_EQ(a.tokens[r], b.tokens[r]) << what << ": request " << r;
    ASSERT_EQ(a.logits[r].size(), b.logits[r].size());
    ASSERT_EQ(
        std::memcmp(a.logits[r].data(), b.logits[r].data(), a.logits[r].size() * sizeof(float)), 0)
        << what << ": request " << r << " logits differ";
  }
}

// The tiny model on three chat conversations, three requests at a time, fp32
// caches, and its reference run.
class ChatRun : public ::testing::Test {
 protected:
  ChatRun()
      : seed(demo::seed()),
        model(random_weights(tiny_config(), seed)),
        workload(make_workload(chat_trace(seed, 3), small_workload(), model.config())),
        options(fp32_options()),
        reference(run_config("reference", model, workload, options, 0, nullptr)) {}
  static ServeOptions fp32_options() {
    ServeOptions o;
    o.concurrency = 3;
    o.fp32_cache = true;
    return o;
  }
  const std::uint64_t seed;
  const Model model;
  const Workload workload;
  const ServeOptions options;
  const RunResult reference;
};

TEST_F(ChatRun, CachedDecodeIsExactlyAFullRecompute) {
  // The reference (paged, fp32, unlimited) against a recompute from scratch.
  for (std::size_t r = 0; r < workload.requests.size(); ++r) {
    std::vector<std::int32_t> tokens = workload.requests[r].prompt;
    const auto& out = reference.outputs.tokens[r];
    tokens.insert(tokens.end(), out.begin(), out.end() - 1);
    const std::vector<float> all = model.recompute(tokens);
    const auto vocab = static_cast<std::size_t>(model.config().vocab_size);
    const std::size_t first = workload.requests[r].prompt.size() - 1;
    ASSERT_EQ(std::memcmp(&all[first * vocab], reference.outputs.logits[r].data(),
                          out.size() * vocab * sizeof(float)),
              0)
        << "request " << r << " (seed " << seed << ")";
  }
  // Dynamic, paged, paged with sharing, and paged under a pool so small that
  // requests are preempted, evicted and recomputed: the same bits.
  for (const char* name : {"dynamic", "paged", "paged+sharing"}) {
    const RunResult run = run_config(name, model, workload, options, 0, &reference.outputs);
    expect_same_logits(run.outputs, reference.outputs, name);
    EXPECT_EQ(run.agreement, 1.0);
    EXPECT_EQ(run.logit_error, 0.0);
    if (run.sharing) {
      EXPECT_GT(run.prefix_hit_rate, 0.0) << "the conversations share prefixes";
      EXPECT_LT(run.recomputed_tokens, reference.recomputed_tokens);
    }
  }
  // Squeezed: six requests of 32 prompt and 20 output tokens (4 blocks of 16
  // each), three at a time in a pool of 6 blocks. All three are admitted (2
  // blocks each) and cannot all grow to a third block: preemption, eviction of
  // the parked and recompute are certain.
  replay::Trace uniform;
  for (std::int64_t r = 0; r < 6; ++r) {
    replay::TraceRequest t;
    t.hash_ids = {100 * r, 100 * r + 1, 100 * r + 2, 100 * r + 3};
    t.input_length = 4 * 512;
    t.output_length = 80;
    uniform.requests.push_back(t);
  }
  const Workload even = make_workload(uniform, small_workload(), model.config());
  ASSERT_EQ(even.max_tokens(), 52);
  const RunResult even_reference = run_config("reference", model, even, options, 0, nullptr);
  const ModelConfig& mc = model.config();
  const std::int64_t tight =
      6 * 16 *
      ModelShape::gqa(mc.num_layers, mc.num_kv_heads, mc.head_dim(), DType::kF32).bytes_per_token();
  const RunResult squeezed =
      run_config("paged+lru", model, even, options, tight, &even_reference.outputs);
  expect_same_logits(squeezed.outputs, even_reference.outputs, "paged+lru");
  EXPECT_GT(squeezed.preemptions, 0);
  EXPECT_GT(squeezed.recomputed_tokens, 0);
  EXPECT_LE(squeezed.peak_live_bytes, tight);
}

// Attention by the library's PagedAttention instead of the model's loop: the
// same greedy tokens and logits within float rounding (another summation
// order and exponential) on the CPU backend; on the GPU (paged-gpu) exactly
// the CPU backend's run, bit for bit.
TEST_F(ChatRun, PagedAttentionServesTheSameTokens) {
  ServeOptions kernel = options;
  kernel.kernel_attention = true;
  for (const char* name : {"dynamic", "paged", "paged+sharing"}) {
    SCOPED_TRACE(::testing::Message() << name << ", seed " << seed);
    const RunResult run = run_config(name, model, workload, kernel, 0, &reference.outputs);
    EXPECT_GE(run.agreement, 0.97);
    EXPECT_LT(run.logit_error, 1e-5);
    EXPECT_LT(run.max_logit_error, 1e-4);
    EXPECT_GT(run.logit_error, 0.0) << "the kernel's exponential differs from std::exp";
  }
  if (cuda_device_count() == 0) {
    EXPECT_TRUE(kvcache::testing::throws_with<Unsupported>(
        [&] { run_config("paged-gpu", model, workload, options, 0, &reference.outputs); },
        {"paged-gpu", "no CUDA device"}));
    GTEST_SKIP() << "no CUDA device: the GPU configuration was only checked to refuse";
  }
  const RunResult cpu = run_config("paged", model, workload, kernel, 0, &reference.outputs);
  const RunResult gpu = run_config("paged-gpu", model, workload, options, 0, &reference.outputs);
  expect_same_logits(gpu.outputs, cpu.outputs, "paged-gpu against paged on the CPU backend");
}

// The compressed configurations attend through PagedAttention over their
// pages (no scratch copy of the cache) and serve close to what the gather
// path serves. Not the same: PagedAttention reads the step's own new tokens
// as the cache stores them (quantized, as an engine's kernel would after
// append), the gather path attends them from the rows just computed (full
// precision); the kernel's own accuracy is tested in the kernel tests.
// Greedy agreement is compared only where the codec keeps the tokens (int8,
// fp8, KIVI: 83-100 % over 400 seeds): the tiny model's random keys are full
// rank, a rank-32 basis loses most of them, and low-rank's agreement (10-40 %
// on either path) turns on near-ties, so it is judged by its logit error.
TEST_F(ChatRun, CompressedCachesAttendWhereTheyLie) {
  ServeOptions gathered = options;
  gathered.gather_attention = true;
  for (const char* name : {"int8", "fp8", "int4-kivi", "low-rank"}) {
    SCOPED_TRACE(::testing::Message() << name << ", seed " << seed);
    const RunResult paged = run_config(name, model, workload, options, 0, &reference.outputs);
    const RunResult copy = run_config(name, model, workload, gathered, 0, &reference.outputs);
    EXPECT_EQ(paged.peak_scratch_bytes, 0);
    EXPECT_GT(copy.peak_scratch_bytes, 0);
    if (std::string_view(name) != "low-rank") {
      EXPECT_GE(paged.agreement, copy.agreement - 0.15);
    }
    EXPECT_LT(paged.logit_error, 1.5 * copy.logit_error + 0.01);
  }
}

// A fork shares the prompt's blocks and each branch decodes its own tokens:
// both match a recompute of their own sequence (copy-on-write kept them apart).
TEST(DemoModel, ForkSharesThePromptAndDiverges) {
  const std::uint64_t seed = demo::seed();
  const Model model(random_weights(tiny_config(), seed));
  const ModelConfig& mc = model.config();
  CacheConfig config;
  config.shape = ModelShape::gqa(mc.num_layers, mc.num_kv_heads, mc.head_dim(), DType::kF32);
  config.block_size = 4;
  config.num_blocks = 64;
  KVCacheManager<CachePolicy<PagedAllocation, NoEviction, PrefixSharing>> manager(config);
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  std::vector<std::int32_t> prompt(10);  // two full blocks and a partial one
  for (auto& t : prompt)
    t = static_cast<std::int32_t>(rng() % 257);

  // One step of `seqs` with `tokens` each, through the manager.
  auto step = [&](std::vector<SeqId> seqs, std::vector<std::vector<std::int32_t>> tokens) {
    std::vector<std::int32_t> counts;
    std::vector<StepSequence> parts;
    for (std::size_t b = 0; b < seqs.size(); ++b) {
      counts.push_back(static_cast<std::int32_t>(tokens[b].size()));
      EXPECT_EQ(manager.try_reserve(seqs[b], counts.back()), ReserveStatus::kOk);
      parts.push_back({manager.sequence(seqs[b]).num_tokens, counts.back(), tokens[b].data()});
    }
    const AppendBatch batch = manager.prepare_append(seqs, counts);
    KvAccess access;
    access.store = [&](std::int32_t layer, const float* k, const float* v) {
      manager.append(layer, batch,
                     TensorView::packed(const_cast<float*>(k), DType::kF32, batch.num_tokens(),
                                        mc.num_kv_heads, mc.head_dim()),
                     TensorView::packed(const_cast<float*>(v), DType::kF32, batch.num_tokens(),
                                        mc.num_kv_heads, mc.head_dim()));
    };
    access.past = [&](std::int32_t layer, std::int32_t b, float* k, float* v) {
      const std::int64_t n = manager.sequence(seqs[static_cast<std::size_t>(b)]).num_tokens;
      manager.gather(seqs[static_cast<std::size_t>(b)], layer,
                     TensorView::packed(k, DType::kF32, n, mc.num_kv_heads, mc.head_dim()),
                     TensorView::packed(v, DType::kF32, n, mc.num_kv_heads, mc.head_dim()));
    };
    const std::vector<float> logits = model.forward(parts, access);
    manager.commit(batch);
    return logits;
  };
  const SeqId parent = manager.create_sequence(prompt);
  step({parent}, {prompt});
  const std::optional<SeqId> child = manager.fork(parent);
  ASSERT_TRUE(child.has_value());
  EXPECT_EQ(manager.block_table(*child)[0], manager.block_table(parent)[0]) << "blocks shared";
  std::vector<std::int32_t> parent_tokens = prompt, child_tokens = prompt;
  std::vector<float> last;
  for (int i = 0; i < 5; ++i) {
    const auto a = static_cast<std::int32_t>(rng() % 257);
    const auto b = static_cast<std::int32_t>((a + 1 + rng() % 255) % 257);  // always different
    parent_tokens.push_back(a);
    child_tokens.push_back(b);
    last = step({parent, *child}, {{a}, {b}});
  }
  EXPECT_GT(manager.stats().copy_on_write, 0) << "the partial prompt block was copied";
  EXPECT_EQ(manager.block_table(*child)[0], manager.block_table(parent)[0]);
  const auto vocab = static_cast<std::size_t>(mc.vocab_size);
  const std::vector<float> p = model.recompute(parent_tokens);
  const std::vector<float> c = model.recompute(child_tokens);
  EXPECT_EQ(std::memcmp(last.data(), &p[(parent_tokens.size() - 1) * vocab], vocab * 4), 0);
  EXPECT_EQ(std::memcmp(last.data() + vocab, &c[(child_tokens.size() - 1) * vocab], vocab * 4), 0);
  EXPECT_NE(std::memcmp(last.data(), last.data() + vocab, vocab * 4), 0);
  manager.check_invariants();
}

TEST(DemoRun, EveryColumnAndTheSizingCalculator) {
  const std::uint64_t seed = demo::seed();
  const Model model(random_weights(tiny_config(), seed));
  const Workload workload = make_workload(chat_trace(seed, 3), small_workload(), model.config());
  ServeOptions options;
  options.concurrency = 3;
  const DemoResult demo = run_all(model, workload, options);
  // Every configuration (paged-gpu only with a GPU).
  ASSERT_EQ(demo.runs.size(), configs().size() - (cuda_device_count() > 0 ? 0 : 1));
  const ModelConfig& mc = model.config();
  const ModelShape fp16 =
      ModelShape::gqa(mc.num_layers, mc.num_kv_heads, mc.head_dim(), DType::kF16);
  const std::int64_t longest = (workload.max_tokens() + 15) / 16 * 16;
  // The baseline: every running request at the longest length, as the calculator says.
  const RunResult& base = *demo.find("baseline");
  EXPECT_EQ(base.pool_bytes, kv_cache_bytes(fp16, longest, options.concurrency));
  EXPECT_EQ(demo.budget_bytes, base.pool_bytes);
  // Paged: whole blocks of the calculator's size, and bytes per token from them.
  const RunResult& paged = *demo.find("paged");
  const std::int64_t block = fp16.bytes_per_token() * 16;
  EXPECT_EQ(paged.peak_live_bytes % block, 0);
  EXPECT_GE(paged.bytes_per_token, static_cast<double>(fp16.bytes_per_token()));
  EXPECT_DOUBLE_EQ(paged.bytes_per_token * static_cast<double>(paged.tokens_at_peak),
                   static_cast<double>(paged.peak_live_bytes));
  EXPECT_LE(paged.peak_live_bytes, base.peak_live_bytes);
  EXPECT_EQ(demo.find("int8")->peak_live_bytes % Int8Codec<32>::block_bytes(fp16, 16), 0);
  EXPECT_LT(demo.find("int8")->peak_live_bytes, paged.peak_live_bytes);
  EXPECT_LE(
      demo.find("paged+lru")->peak_live_bytes,
      static_cast<std::int64_t>(options.lru_fraction * static_cast<double>(paged.peak_live_bytes)));
  for (const RunResult& r : demo.runs) {
    EXPECT_GT(r.seconds, 0) << r.name;
    EXPECT_EQ(r.generated_tokens, workload.output_tokens()) << r.name;
    if (!r.sharing) {
      EXPECT_GE(r.computed_tokens, workload.prompt_tokens()) << r.name;
    }
    EXPECT_GT(r.agreement, 0.0) << r.name;
    EXPECT_TRUE(std::isfinite(r.logit_error)) << r.name;
  }
  EXPECT_GT(demo.find("paged+sharing")->prefix_hit_rate, 0);
  // Every column and every configuration in the table; every figure in the JSON.
  const std::string table = format_runs(demo);
  for (const char* column :
       {"config", "block", "pool", "peak", "scratch", "B/token", "saved", "tok/s", "time", "cache",
        "hit", "evicted", "recomp", "preempt", "agree", "logit err"})
    EXPECT_NE(table.find(column), std::string::npos) << column;
  for (const ConfigInfo& c : configs()) {
    if (std::string_view(c.name) != "paged-gpu" || cuda_device_count() > 0) {
      EXPECT_NE(table.find(c.name), std::string::npos) << c.name;
    }
  }
  const std::string article = format_article(demo);
  for (const ArticleClaim& c : article_claims())
    EXPECT_NE(article.find(c.strategy), std::string::npos) << c.strategy;
  const nlohmann::json j = to_json(demo, workload, model, options);
  ASSERT_EQ(j["runs"].size(), demo.runs.size());
  for (const char* key : {"pool_bytes", "peak_live_bytes", "bytes_per_token", "tokens_per_second",
                          "prefix_hit_rate", "evicted_blocks", "recomputed_tokens", "agreement",
                          "logit_error_mean", "memory_saved", "speed_change"})
    EXPECT_TRUE(j["runs"][0].contains(key)) << key;
  EXPECT_EQ(j["article"].size(), article_claims().size());
}

// ---- llama2.c checkpoints ---------------------------------------------------

void write_llama2c(const std::string& path, const Weights& w, bool shared) {
  std::ofstream out(path, std::ios::binary);
  const ModelConfig& c = w.config;
  const std::int32_t header[7] = {c.dim,          c.hidden_dim,
                                  c.num_layers,   c.num_heads,
                                  c.num_kv_heads, shared ? c.vocab_size : -c.vocab_size,
                                  c.max_seq_len};
  out.write(reinterpret_cast<const char*>(header), sizeof(header));
  auto put = [&](const std::vector<float>& v) {
    out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  };
  put(w.embedding);
  for (auto field : {&LayerWeights::attn_norm, &LayerWeights::wq, &LayerWeights::wk,
                     &LayerWeights::wv, &LayerWeights::wo, &LayerWeights::ffn_norm,
                     &LayerWeights::w1, &LayerWeights::w2, &LayerWeights::w3}) {
    for (const LayerWeights& layer : w.layers)
      put(layer.*field);
  }
  put(w.final_norm);
  put(std::vector<float>(static_cast<std::size_t>(c.max_seq_len * c.head_dim()), 0.5f));
  if (!shared) put(w.classifier);
}

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kvcache_demo_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + std::to_string(seed()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const char* name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

TEST_F(Checkpoint, LoadsWhatWasWrittenAndComputesTheSame) {
  ModelConfig c = tiny_config();
  c.max_seq_len = 64;
  const Weights original = random_weights(c, seed());
  write_llama2c(path("unshared.bin"), original, false);
  const Weights loaded = load_llama2c(path("unshared.bin"));
  EXPECT_EQ(loaded.config.dim, c.dim);
  EXPECT_EQ(loaded.config.vocab_size, c.vocab_size);
  EXPECT_EQ(loaded.config.max_seq_len, 64);
  const std::vector<std::int32_t> tokens = {1, 5, 9, 200, 3};
  EXPECT_EQ(Model(original).recompute(tokens), Model(loaded).recompute(tokens));
  // Shared classifier: the embedding serves as the output layer.
  Weights tied = original;
  tied.classifier.clear();
  write_llama2c(path("shared.bin"), tied, true);
  const Weights tied_loaded = load_llama2c(path("shared.bin"));
  EXPECT_TRUE(tied_loaded.classifier.empty());
  EXPECT_EQ(Model(tied).recompute(tokens), Model(tied_loaded).recompute(tokens));
}

TEST_F(Checkpoint, RefusesBadFiles) {
  ModelConfig c = tiny_config();
  c.max_seq_len = 16;
  const Weights w = random_weights(c, seed());
  write_llama2c(path("good.bin"), w, false);
  const auto good_size = std::filesystem::file_size(path("good.bin"));
  auto expect_refused = [&](const std::string& file, const char* needle) {
    try {
      (void)load_llama2c(file);
      ADD_FAILURE() << file << " was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_refused(path("missing.bin"), "cannot open");
  expect_refused(dir_.string(), "directory");
  { std::ofstream(path("short.bin")) << "llama"; }
  expect_refused(path("short.bin"), "shorter than the 28-byte");
  std::filesystem::copy_file(path("good.bin"), path("truncated.bin"));
  std::filesystem::resize_file(path("truncated.bin"), good_size - 4);
  expect_refused(path("truncated.bin"), "truncated");
  std::filesystem::copy_file(path("good.bin"), path("long.bin"));
  std::filesystem::resize_file(path("long.bin"), good_size + 8);
  expect_refused(path("long.bin"), "trailing bytes");
  auto with_header = [&](const char* name, int field, std::int32_t value) {
    std::filesystem::copy_file(path("good.bin"), path(name));
    std::fstream f(path(name), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(field * 4);
    f.write(reinterpret_cast<const char*>(&value), 4);
    return path(name);
  };
  expect_refused(with_header("heads.bin", 3, 3), "not a multiple of num_heads");
  expect_refused(with_header("kv.bin", 4, 8), "num_kv_heads");
  expect_refused(with_header("layers.bin", 2, -1), "num_layers");
  expect_refused(with_header("vocab.bin", 5, 0), "vocab_size");
  expect_refused(with_header("huge.bin", 0, 1 << 30), "dim");
  {
    std::filesystem::copy_file(path("good.bin"), path("nan.bin"));
    std::fstream f(path("nan.bin"), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(28 + 4 * 10);
    const float nan = std::nanf("");
    f.write(reinterpret_cast<const char*>(&nan), 4);
  }
  expect_refused(path("nan.bin"), "non-finite");
}

// ---- the command line and the workload ---------------------------------------

TEST(DemoCli, BadOptionsNameTheOptionAndWhatItTakes) {
  auto refused = [](std::vector<std::string> words, const char* needle) {
    try {
      (void)parse_arguments(words);
      ADD_FAILURE() << words[0] << " accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused({"--requests", "0"}, "--requests '0': expected an integer from 1 to 100000");
  refused({"--requests", "12x"}, "--requests");
  refused({"--prompt-scale", "3"}, "must divide 512");
  refused({"--concurrency", "99999"}, "--concurrency");
  refused({"--lru-fraction", "nan"}, "--lru-fraction 'nan'");
  refused({"--lru-fraction", "0.01"}, "--lru-fraction");
  refused({"--configs", "paged,zip"}, "unknown configuration 'zip': allowed reference, baseline");
  refused({"--max-output"}, "--max-output needs a value");
  refused({"--frobnicate"}, "unknown option '--frobnicate'");
  const Arguments a = parse_arguments(std::vector<std::string>{
      "--requests", "7", "--configs", "int8,paged", "--lru-fraction", "0.5", "--json", "x.json"});
  EXPECT_EQ(a.workload.requests, 7);
  EXPECT_EQ(a.configs, (std::vector<std::string>{"int8", "paged"}));
  EXPECT_EQ(a.serve.lru_fraction, 0.5);
  EXPECT_EQ(a.json_path, "x.json");
}

TEST(DemoWorkload, EqualHashIdsGiveEqualTokens) {
  const replay::Trace trace = chat_trace(seed(), 2);
  WorkloadOptions o = small_workload();
  o.requests = 6;
  const Workload w = make_workload(trace, o, tiny_config());
  ASSERT_EQ(w.requests.size(), 6u);
  for (std::size_t r = 0; r < w.requests.size(); ++r) {
    const auto& t = trace.requests[r];
    EXPECT_EQ(static_cast<std::int64_t>(w.requests[r].prompt.size()), t.input_length / 64);
    EXPECT_GE(w.requests[r].output_tokens, 1);
    EXPECT_LE(w.requests[r].output_tokens, o.max_output);
  }
  // Turn 2 of a conversation starts with all of turn 1's hash blocks.
  const auto& first = w.requests[0].prompt;
  const auto& second = w.requests[1].prompt;
  const std::size_t shared = (trace.requests[0].hash_ids.size() - 1) * 8;
  ASSERT_GE(second.size(), shared);
  EXPECT_TRUE(std::equal(first.begin(), first.begin() + static_cast<std::ptrdiff_t>(shared),
                         second.begin()));
  o.prompt_scale = 3;
  EXPECT_THROW((void)make_workload(trace, o, tiny_config()), InvalidArgument);
}

}  // namespace
}  // namespace kvcache::demo
