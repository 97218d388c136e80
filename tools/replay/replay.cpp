#include "replay.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <queue>
#include <random>
#include <set>
#include <unordered_set>

#include "kvcache/kvcache.hpp"

namespace kvcache::replay {

const std::vector<std::string> kPolicies = {"none", "lru", "lfu-aging", "s3-fifo"};
const std::vector<std::string> kCodecs = {"plain", "int8", "fp8", "int4", "int2", "low-rank-32"};

std::int64_t codec_bytes_per_block(const std::string& codec, const ModelShape& shape,
                                   std::int32_t block_tokens) {
  if (codec == "plain") return PlainCodec::block_bytes(shape, block_tokens);
  if (codec == "int8") return Int8Codec<32>::block_bytes(shape, block_tokens);
  if (codec == "fp8") return Fp8Codec<>::block_bytes(shape, block_tokens);
  if (codec == "low-rank-32") return LowRankCodec<32>::block_bytes(shape, block_tokens);
  if (codec == "int4" || codec == "int2") {
    if (block_tokens % 32 != 0) {
      detail::raise<InvalidArgument>(
          "replay: codec {} needs blocks of a multiple of 32 tokens, not {}", codec, block_tokens);
    }
    const std::int64_t page = codec == "int4" ? KiviCodec<4, 32, 128>::block_bytes(shape, 32)
                                              : KiviCodec<2, 32, 128>::block_bytes(shape, 32);
    return page * (block_tokens / 32);
  }
  detail::raise<InvalidArgument>(
      "replay: codec \"{}\" is not one of plain, int8, fp8, int4, int2, low-rank-32", codec);
}

std::int64_t codec_fixed_bytes(const std::string& codec, const ModelShape& shape,
                               std::int64_t sequences) {
  if (codec != "int4" && codec != "int2") return 0;
  return sequences * (128 + 32) * shape.bytes_per_token();  // each live sequence's R + G tokens
}

namespace {

std::int64_t prompt_tokens(const TraceRequest& request, const ReplayOptions& options) {
  return static_cast<std::int64_t>(request.hash_ids.size()) * options.trace_block_tokens;
}

// Token ids of a request's prompt: block j holds tokens derived from its
// hash id, so equal hash ids give equal blocks.
void fill_tokens(const TraceRequest& request, std::int32_t block_tokens,
                 std::vector<std::int32_t>& tokens) {
  tokens.resize(request.hash_ids.size() * static_cast<std::size_t>(block_tokens));
  std::size_t next = 0;
  for (std::int64_t id : request.hash_ids) {
    const std::uint64_t base =
        static_cast<std::uint64_t>(id) * static_cast<std::uint64_t>(block_tokens);
    for (std::int32_t i = 0; i < block_tokens; ++i) {
      tokens[next++] =
          static_cast<std::int32_t>((base + static_cast<std::uint64_t>(i)) & 0x7fffffffu);
    }
  }
}

struct Running {
  double finish_ms;
  std::int64_t order;
  SeqId seq;
  bool operator>(const Running& other) const {
    return finish_ms != other.finish_ms ? finish_ms > other.finish_ms : order > other.order;
  }
};

template <class Manager>
void append_chunk(Manager& manager, SeqId seq, std::int64_t count,
                  std::span<const std::int32_t> ids, const Buffer& k, const Buffer& v,
                  std::int64_t& bytes) {
  if (count == 0) return;
  const std::vector<SeqId> seqs = {seq};
  const std::vector<std::int32_t> counts = {static_cast<std::int32_t>(count)};
  AppendBatch batch = manager.prepare_append(seqs, counts, ids);
  if (k) {
    const ModelShape& shape = manager.shape();
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      manager.append(
          layer, batch,
          TensorView::packed(k.data(), shape.dtype, count, shape.num_kv_heads, shape.head_dim),
          TensorView::packed(v.data(), shape.dtype, count, shape.num_kv_heads, shape.head_dim));
    }
    bytes += count * shape.bytes_per_token();
  }
  manager.commit(batch);
}

template <class Policy, class Backend>
ReplayResult run_with(const Trace& trace, const ReplayOptions& options, Backend backend) {
  CacheConfig config;
  config.shape = options.model.value_or(ModelShape::gqa(1, 1, 8, DType::kF16));
  config.block_size = options.block_size;
  config.num_blocks =
      options.capacity_blocks > 0 ? options.capacity_blocks : unlimited_capacity(trace, options);
  std::int64_t widest = 1;
  for (const auto& request : trace.requests) {
    widest = std::max({widest, prompt_tokens(request, options), request.output_length});
  }
  config.max_batch_tokens = static_cast<std::int32_t>(widest);
  config.max_batch_sequences = 1;
  KVCacheManager<Policy, Backend> manager(config, std::move(backend));

  // With a model: one buffer of random K and V rows, appended for every chunk.
  Buffer k, v;
  if (options.model) {
    const auto bytes =
        static_cast<std::size_t>(widest * config.shape.kv_width() * dtype_size(config.shape.dtype));
    std::vector<std::byte> host(bytes);
    std::mt19937_64 rng(7);
    for (std::size_t i = 0; i + 8 <= bytes; i += 8) {
      const std::uint64_t bits =
          rng() & 0x3bff3bff3bff3bffULL;  // finite fp16 / bf16 / fp32 bit patterns
      std::memcpy(host.data() + i, &bits, 8);
    }
    k = manager.backend().allocate(bytes);
    v = manager.backend().allocate(bytes);
    manager.backend().copy_to_backend(k.data(), host.data(), bytes);
    manager.backend().copy_to_backend(v.data(), host.data(), bytes);
  }

  ReplayResult result;
  result.policy = options.policy;
  result.capacity_blocks = config.num_blocks;
  const auto start = std::chrono::steady_clock::now();
  std::priority_queue<Running, std::vector<Running>, std::greater<>> running;
  std::vector<std::int32_t> tokens;
  std::int64_t order = 0;
  for (const auto& request : trace.requests) {
    const auto now = static_cast<double>(request.timestamp_ms);
    while (!running.empty() && running.top().finish_ms <= now) {
      manager.release(running.top().seq);
      running.pop();
    }
    ++result.requests;
    fill_tokens(request, options.trace_block_tokens, tokens);
    const SeqId seq = manager.create_sequence(tokens);
    const std::int64_t cached = manager.sequence(seq).num_tokens;
    const std::int64_t uncached = static_cast<std::int64_t>(tokens.size()) - cached;
    if (manager.try_reserve(seq, uncached + request.output_length) != ReserveStatus::kOk) {
      ++result.rejected;
      manager.release(seq);
      continue;
    }
    // The prompt's ids are known since create_sequence: no need to pass them again.
    append_chunk(manager, seq, uncached, {}, k, v, result.bytes_appended);
    append_chunk(manager, seq, request.output_length, {}, k, v, result.bytes_appended);
    const std::int64_t free = manager.num_free_blocks();
    result.peak_occupied_blocks = std::max(result.peak_occupied_blocks, config.num_blocks - free);
    result.peak_used_blocks =
        std::max(result.peak_used_blocks, config.num_blocks - free - manager.num_cached_blocks());
    if (options.decode_ms_per_token <= 0) {
      manager.release(seq);
    } else {
      running.push({now + static_cast<double>(request.output_length) * options.decode_ms_per_token,
                    order++, seq});
    }
  }
  while (!running.empty()) {
    manager.release(running.top().seq);
    running.pop();
  }
  manager.backend().synchronize();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const CacheStats stats = manager.stats();
  result.blocks_requested = stats.prefix_blocks_requested;
  result.blocks_hit = stats.prefix_blocks_hit;
  result.evicted_blocks = stats.evicted_blocks;
  return result;
}

template <class Policy>
ReplayResult run_policy(const Trace& trace, const ReplayOptions& options) {
  if (!options.model) return run_with<Policy>(trace, options, MetadataBackend());
  if (options.backend == "cuda") return run_with<Policy>(trace, options, CudaBackend(0));
  if (options.backend == "cpu") return run_with<Policy>(trace, options, HostBackend());
  detail::raise<InvalidArgument>("replay: backend \"{}\" is not cpu or cuda", options.backend);
}

}  // namespace

std::int64_t unlimited_capacity(const Trace& trace, const ReplayOptions& options) {
  std::int64_t blocks = 1;
  for (const auto& request : trace.requests) {
    blocks += (prompt_tokens(request, options) + request.output_length + options.block_size - 1) /
              options.block_size;
  }
  return blocks;
}

std::int64_t unique_blocks(const Trace& trace) {
  std::unordered_set<std::int64_t> ids;
  for (const auto& request : trace.requests)
    ids.insert(request.hash_ids.begin(), request.hash_ids.end());
  return static_cast<std::int64_t>(ids.size());
}

ReplayResult run_replay(const Trace& trace, const ReplayOptions& options) {
  if (options.trace_block_tokens % options.block_size != 0 &&
      options.block_size % options.trace_block_tokens != 0) {
    detail::raise<InvalidArgument>(
        "replay: block size {} and the trace's {}-token blocks must divide one another",
        options.block_size, options.trace_block_tokens);
  }
  if (options.capacity_blocks < 0) {
    detail::raise<InvalidArgument>("replay: capacity {} blocks is negative",
                                   options.capacity_blocks);
  }
  using Paged = PagedAllocation;
  if (options.policy == "none")
    return run_policy<CachePolicy<Paged, NoEviction, PrefixSharing>>(trace, options);
  if (options.policy == "lru")
    return run_policy<CachePolicy<Paged, LruEviction, PrefixSharing>>(trace, options);
  if (options.policy == "lfu-aging") {
    return run_policy<CachePolicy<Paged, LfuAgingEviction, PrefixSharing>>(trace, options);
  }
  if (options.policy == "s3-fifo")
    return run_policy<CachePolicy<Paged, S3FifoEviction, PrefixSharing>>(trace, options);
  detail::raise<InvalidArgument>(
      "replay: policy \"{}\" is not one of none, lru, lfu-aging, s3-fifo", options.policy);
}

ModelShape parse_model(const std::string& name) {
  if (name == "tiny") return ModelShape::gqa(2, 2, 64, DType::kF16);
  if (name == "llama3-8b") return ModelShape::gqa(32, 8, 128, DType::kF16);
  if (name == "llama2-7b") return ModelShape::gqa(32, 32, 128, DType::kF16);
  if (name == "qwen2-7b") return ModelShape::gqa(28, 4, 128, DType::kBF16);
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t colon = name.find(':', start);
    parts.push_back(name.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  auto number = [&](const std::string& text) {
    std::size_t used = 0;
    int value = -1;
    try {
      value = std::stoi(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != text.size() || text.empty()) {
      detail::raise<InvalidArgument>("model \"{}\": \"{}\" is not a number", name, text);
    }
    return value;
  };
  if (parts.size() < 3 || parts.size() > 4) {
    detail::raise<InvalidArgument>(
        "model \"{}\" is not tiny, llama3-8b, llama2-7b, qwen2-7b or "
        "layers:kv_heads:head_dim[:fp16|bf16|fp32]",
        name);
  }
  DType dtype = DType::kF16;
  if (parts.size() == 4) {
    if (parts[3] == "bf16") {
      dtype = DType::kBF16;
    } else if (parts[3] == "fp32") {
      dtype = DType::kF32;
    } else if (parts[3] != "fp16") {
      detail::raise<InvalidArgument>("model \"{}\": dtype \"{}\" is not fp16, bf16 or fp32", name,
                                     parts[3]);
    }
  }
  ModelShape shape = ModelShape::gqa(number(parts[0]), number(parts[1]), number(parts[2]), dtype);
  shape.validate();
  return shape;
}

}  // namespace kvcache::replay
