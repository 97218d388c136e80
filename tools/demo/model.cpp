#include "model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "kvcache/detail/checked.hpp"

namespace kvcache::demo {

namespace {

constexpr std::int32_t kLanes = 8;

// a . b over n values: lane i % 8 sums its values in order, then the lanes
// are combined as ((0+1)+(2+3))+((4+5)+(6+7)). The order depends on n only.
inline float dot(const float* a, const float* b, std::int32_t n) {
  float lane[kLanes] = {};
  std::int32_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::int32_t j = 0; j < kLanes; ++j)
      lane[j] += a[i + j] * b[i + j];
  }
  for (std::int32_t j = 0; i + j < n; ++j)
    lane[j] += a[i + j] * b[i + j];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

void rms_norm(const float* x, const float* weight, std::int32_t n, float eps, float* out) {
  float sum = 0.0f;
  for (std::int32_t i = 0; i < n; ++i)
    sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (std::int32_t i = 0; i < n; ++i)
    out[i] = x[i] * scale * weight[i];
}

std::size_t count(std::int64_t a, std::int64_t b = 1, std::int64_t c = 1) {
  return detail::to_size(
      detail::mul_or_throw(detail::mul_or_throw(a, b, "model size"), c, "model size"),
      "model size");
}

}  // namespace

void ModelConfig::validate() const {
  auto check = [](std::int64_t value, std::int64_t low, std::int64_t high, const char* name) {
    if (value < low || value > high)
      throw InvalidArgument(fmt::format("model {} = {}: allowed {} to {}", name, value, low, high));
  };
  check(dim, 8, 16384, "dim");
  check(hidden_dim, 1, 65536, "hidden_dim");
  check(num_layers, 1, 256, "num_layers");
  check(num_heads, 1, 256, "num_heads");
  check(num_kv_heads, 1, num_heads, "num_kv_heads");
  check(vocab_size, 2, 1 << 20, "vocab_size");
  check(max_seq_len, 1, 1 << 20, "seq_len");
  if (dim % num_heads != 0)
    throw InvalidArgument(
        fmt::format("model dim = {} is not a multiple of num_heads = {}", dim, num_heads));
  if (num_heads % num_kv_heads != 0)
    throw InvalidArgument(fmt::format("model num_heads = {} is not a multiple of num_kv_heads = {}",
                                      num_heads, num_kv_heads));
  if (head_dim() % 2 != 0 || head_dim() > 1024)
    throw InvalidArgument(fmt::format(
        "model head_dim = {} (dim / num_heads): must be even and at most 1024", head_dim()));
}

Weights random_weights(const ModelConfig& config, std::uint64_t seed) {
  config.validate();
  std::mt19937_64 rng(seed);
  auto matrix = [&](std::int32_t out, std::int32_t in, float gain) {
    std::normal_distribution<float> normal(0.0f, gain / std::sqrt(static_cast<float>(in)));
    std::vector<float> m(count(out, in));
    for (auto& x : m)
      x = normal(rng);
    return m;
  };
  auto ones = [](std::int32_t n) { return std::vector<float>(count(n), 1.0f); };
  Weights w;
  w.config = config;
  w.source = fmt::format("random (seed {})", seed);
  w.embedding = matrix(config.vocab_size, config.dim, std::sqrt(static_cast<float>(config.dim)));
  for (std::int32_t l = 0; l < config.num_layers; ++l) {
    LayerWeights layer;
    layer.attn_norm = ones(config.dim);
    // Queries and keys a little larger than unit so attention is not flat.
    layer.wq = matrix(config.dim, config.dim, 2.0f);
    layer.wk = matrix(config.kv_dim(), config.dim, 2.0f);
    layer.wv = matrix(config.kv_dim(), config.dim, 1.0f);
    layer.wo = matrix(config.dim, config.dim, 1.0f);
    layer.ffn_norm = ones(config.dim);
    layer.w1 = matrix(config.hidden_dim, config.dim, 1.0f);
    layer.w2 = matrix(config.dim, config.hidden_dim, 1.0f);
    layer.w3 = matrix(config.hidden_dim, config.dim, 1.0f);
    w.layers.push_back(std::move(layer));
  }
  w.final_norm = ones(config.dim);
  // Logits with a spread of a few units, as a trained model's are.
  w.classifier = matrix(config.vocab_size, config.dim, 4.0f);
  return w;
}

Weights load_llama2c(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw InvalidArgument(fmt::format("--weights {}: is a directory, not a checkpoint", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(fmt::format("--weights {}: cannot open the file", path));
  in.seekg(0, std::ios::end);
  const auto file_bytes = static_cast<std::int64_t>(in.tellg());
  in.seekg(0);
  constexpr std::int64_t kHeaderBytes = 7 * 4;
  if (file_bytes < kHeaderBytes)
    throw InvalidArgument(fmt::format(
        "--weights {}: {} bytes, shorter than the 28-byte llama2.c header", path, file_bytes));
  std::int32_t header[7];
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  ModelConfig c;
  c.dim = header[0];
  c.hidden_dim = header[1];
  c.num_layers = header[2];
  c.num_heads = header[3];
  c.num_kv_heads = header[4];
  const bool shared_classifier = header[5] > 0;
  c.vocab_size = header[5] == INT32_MIN ? 0 : std::abs(header[5]);
  c.max_seq_len = header[6];
  try {
    c.validate();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("--weights {}: bad header: {}", path, e.what()));
  }
  const std::int64_t d = c.dim, kv = c.kv_dim(), h = c.hidden_dim, L = c.num_layers,
                     V = c.vocab_size, S = c.max_seq_len, hd = c.head_dim();
  std::int64_t floats = 0;
  auto add = [&](std::int64_t n) { floats = detail::add_or_throw(floats, n, "checkpoint size"); };
  add(V * d);
  add(L * d);           // rms_att
  add(L * d * d);       // wq
  add(2 * L * d * kv);  // wk, wv
  add(L * d * d);       // wo
  add(L * d);           // rms_ffn
  add(3 * L * d * h);   // w1, w2, w3
  add(d);               // rms_final
  add(S * hd);          // the two RoPE tables (seq_len x head_dim / 2 each)
  if (!shared_classifier) add(V * d);
  const std::int64_t expected = detail::add_or_throw(
      kHeaderBytes, detail::mul_or_throw(floats, 4, "checkpoint size"), "checkpoint size");
  if (file_bytes != expected)
    throw InvalidArgument(fmt::format(
        "--weights {}: {} bytes, but its header (dim {}, hidden {}, {} layers, {} heads, {} kv "
        "heads, vocab {}, seq_len {}, {} classifier) needs exactly {}: {}",
        path, file_bytes, c.dim, c.hidden_dim, c.num_layers, c.num_heads, c.num_kv_heads,
        c.vocab_size, c.max_seq_len, shared_classifier ? "shared" : "unshared", expected,
        file_bytes < expected ? "the file is truncated" : "the file has trailing bytes"));
  Weights w;
  w.config = c;
  w.source = path;
  auto read = [&](std::int64_t n, const char* name) {
    std::vector<float> v(count(n));
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * 4));
    if (!in) throw InvalidArgument(fmt::format("--weights {}: read failed in {}", path, name));
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i]))
        throw InvalidArgument(
            fmt::format("--weights {}: {} holds a non-finite value at index {}", path, name, i));
    }
    return v;
  };
  w.embedding = read(V * d, "token_embedding_table");
  w.layers.resize(static_cast<std::size_t>(L));
  auto per_layer = [&](std::vector<float> LayerWeights::*field, std::int64_t n, const char* name) {
    for (auto& layer : w.layers)
      layer.*field = read(n, name);
  };
  per_layer(&LayerWeights::attn_norm, d, "rms_att_weight");
  per_layer(&LayerWeights::wq, d * d, "wq");
  per_layer(&LayerWeights::wk, kv * d, "wk");
  per_layer(&LayerWeights::wv, kv * d, "wv");
  per_layer(&LayerWeights::wo, d * d, "wo");
  per_layer(&LayerWeights::ffn_norm, d, "rms_ffn_weight");
  per_layer(&LayerWeights::w1, h * d, "w1");
  per_layer(&LayerWeights::w2, d * h, "w2");
  per_layer(&LayerWeights::w3, h * d, "w3");
  w.final_norm = read(d, "rms_final_weight");
  in.seekg(S * hd * 4, std::ios::cur);  // freq_cis_real, freq_cis_imag
  if (!shared_classifier) w.classifier = read(V * d, "wcls");
  return w;
}

namespace {

using Lanes = float __attribute__((vector_size(32)));  // 8 floats

inline void load8(Lanes& v, const float* p) {
  std::memcpy(&v, p, sizeof(v));
}

inline float reduce(const Lanes& l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// R input rows against 4 weight rows: lane j of output (r, o) sums
// x[r][i] * w[o][i] over i = j mod 8 in order, then the tail, then the tree:
// the same operations as dot(), whatever R is.
template <int R>
inline void block(const float* const* a, const float* const* w, std::int32_t in_dim,
                  float* const* y) {
  Lanes acc[R][4] = {};
  std::int32_t i = 0;
  for (; i + kLanes <= in_dim; i += kLanes) {
    Lanes w0, w1, w2, w3;
    load8(w0, w[0] + i);
    load8(w1, w[1] + i);
    load8(w2, w[2] + i);
    load8(w3, w[3] + i);
    for (int r = 0; r < R; ++r) {
      Lanes x;
      load8(x, a[r] + i);
      acc[r][0] += x * w0;
      acc[r][1] += x * w1;
      acc[r][2] += x * w2;
      acc[r][3] += x * w3;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int k = 0; k < 4; ++k) {
      for (std::int32_t j = 0; i + j < in_dim; ++j)
        acc[r][k][j] += a[r][i + j] * w[k][i + j];
      y[r][k] = reduce(acc[r][k]);
    }
  }
}

// Built twice on x86-64 (AVX2 with FMA, and the baseline), picked once at load
// time: every call in a process runs the same code, so the sums stay the same.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void matmul_range(const float* x, std::int32_t rows, const float* w, std::int32_t in_dim,
                  std::int32_t out_dim, std::int32_t o_begin, std::int32_t o_end, float* out) {
  std::int32_t o = o_begin;
  for (; o + 4 <= o_end; o += 4) {
    const float* wr[4];
    for (int k = 0; k < 4; ++k)
      wr[k] = w + static_cast<std::int64_t>(o + k) * in_dim;
    std::int32_t r = 0;
    for (; r + 2 <= rows; r += 2) {
      const float* a[2] = {x + static_cast<std::int64_t>(r) * in_dim,
                           x + static_cast<std::int64_t>(r + 1) * in_dim};
      float* y[2] = {out + static_cast<std::int64_t>(r) * out_dim + o,
                     out + static_cast<std::int64_t>(r + 1) * out_dim + o};
      block<2>(a, wr, in_dim, y);
    }
    if (r < rows) {
      const float* a[1] = {x + static_cast<std::int64_t>(r) * in_dim};
      float* y[1] = {out + static_cast<std::int64_t>(r) * out_dim + o};
      block<1>(a, wr, in_dim, y);
    }
  }
  for (; o < o_end; ++o) {
    for (std::int32_t r = 0; r < rows; ++r) {
      out[static_cast<std::int64_t>(r) * out_dim + o] =
          dot(x + static_cast<std::int64_t>(r) * in_dim, w + static_cast<std::int64_t>(o) * in_dim,
              in_dim);
    }
  }
}

}  // namespace

void matmul(const float* x, std::int32_t rows, const float* w, std::int32_t in_dim,
            std::int32_t out_dim, float* out) {
  // Output columns split between threads in blocks of 4 (each output's sum
  // is computed by one thread, in the order above: threads change nothing).
  const std::int64_t work = std::int64_t{rows} * in_dim * out_dim;
  const auto cores = static_cast<std::int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  const std::int32_t threads = work < (std::int64_t{1} << 21) ? 1 : std::min(cores, 8);
  if (threads == 1) {
    matmul_range(x, rows, w, in_dim, out_dim, 0, out_dim, out);
    return;
  }
  const std::int32_t blocks = (out_dim + 3) / 4;
  std::vector<std::thread> pool;
  for (std::int32_t t = 0; t < threads; ++t) {
    const std::int32_t begin = std::min(out_dim, blocks * t / threads * 4);
    const std::int32_t end =
        t + 1 == threads ? out_dim : std::min(out_dim, blocks * (t + 1) / threads * 4);
    if (begin >= end) continue;
    if (t + 1 == threads) {
      matmul_range(x, rows, w, in_dim, out_dim, begin, end, out);
    } else {
      pool.emplace_back(matmul_range, x, rows, w, in_dim, out_dim, begin, end, out);
    }
  }
  for (auto& thread : pool)
    thread.join();
}

Model::Model(Weights weights) : weights_(std::move(weights)) {
  weights_.config.validate();
  const std::int32_t half = weights_.config.head_dim() / 2;
  for (std::int32_t i = 0; i < half; ++i) {
    inverse_frequency_.push_back(
        1.0f /
        std::pow(weights_.config.rope_theta,
                 static_cast<float>(2 * i) / static_cast<float>(weights_.config.head_dim())));
  }
}

// llama2.c's rotation: adjacent pairs (2i, 2i + 1) of each head turn by
// position x theta^(-2i / head_dim).
void Model::rotate(float* row, std::int32_t width, std::int64_t position) const {
  const std::int32_t hd = config().head_dim();
  for (std::int32_t i = 0; i < width; i += 2) {
    const float angle = static_cast<float>(position) * inverse_frequency_[(i % hd) / 2];
    const float c = std::cos(angle), s = std::sin(angle);
    const float a = row[i], b = row[i + 1];
    row[i] = a * c - b * s;
    row[i + 1] = a * s + b * c;
  }
}

namespace {

struct Scratch {
  std::vector<float> x, xb, q, k, v, att, proj, h1, h3, past_k, past_v, scores;
};

}  // namespace

std::vector<float> Model::forward(std::span<const StepSequence> step, const KvAccess& cache) const {
  return forward_rows(step, cache, false);
}

std::vector<float> Model::recompute(std::span<const std::int32_t> tokens) const {
  const StepSequence whole{0, static_cast<std::int32_t>(tokens.size()), tokens.data()};
  KvAccess none;
  none.store = [](std::int32_t, const float*, const float*) {};
  none.past = [](std::int32_t, std::int32_t, float*, float*) {};
  return forward_rows(std::span<const StepSequence>(&whole, 1), none, true);
}

std::vector<float> Model::forward_rows(std::span<const StepSequence> step, const KvAccess& cache,
                                       bool every_position) const {
  const ModelConfig& c = config();
  const std::int32_t d = c.dim, kvd = c.kv_dim(), hd = c.head_dim(), hidden = c.hidden_dim;
  const std::int32_t group = c.num_heads / c.num_kv_heads;
  std::int32_t total = 0;
  for (const StepSequence& s : step) {
    if (s.count <= 0 || s.start < 0)
      throw InvalidArgument(
          fmt::format("forward: a sequence with {} tokens at position {}", s.count, s.start));
    total += s.count;
  }
  const auto rows = static_cast<std::size_t>(total);
  Scratch m;
  m.x.resize(rows * d);
  m.xb.resize(rows * d);
  m.q.resize(rows * d);
  m.k.resize(rows * kvd);
  m.v.resize(rows * kvd);
  m.att.resize(rows * d);
  m.proj.resize(rows * d);
  m.h1.resize(rows * hidden);
  m.h3.resize(rows * hidden);
  std::vector<std::int64_t> position(rows);
  {
    std::size_t r = 0;
    for (const StepSequence& s : step) {
      for (std::int32_t t = 0; t < s.count; ++t, ++r) {
        const std::int32_t token = s.tokens[t];
        if (token < 0 || token >= c.vocab_size)
          throw InvalidArgument(
              fmt::format("forward: token {} outside the vocabulary [0, {})", token, c.vocab_size));
        std::memcpy(&m.x[r * d], &weights_.embedding[static_cast<std::size_t>(token) * d],
                    static_cast<std::size_t>(d) * sizeof(float));
        position[r] = s.start + t;
      }
    }
  }
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  for (std::int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[static_cast<std::size_t>(l)];
    for (std::size_t r = 0; r < rows; ++r)
      rms_norm(&m.x[r * d], w.attn_norm.data(), d, c.norm_eps, &m.xb[r * d]);
    matmul(m.xb.data(), total, w.wq.data(), d, d, m.q.data());
    matmul(m.xb.data(), total, w.wk.data(), d, kvd, m.k.data());
    matmul(m.xb.data(), total, w.wv.data(), d, kvd, m.v.data());
    for (std::size_t r = 0; r < rows; ++r) {
      rotate(&m.q[r * d], d, position[r]);
      rotate(&m.k[r * kvd], kvd, position[r]);
    }
    cache.store(l, m.k.data(), m.v.data());
    // Attention: positions before the step from the cache, the step's own
    // tokens from the rows just computed (or all of it by the cache side).
    if (cache.attend) cache.attend(l, m.q.data(), m.att.data());
    std::size_t first = 0;
    for (std::size_t b = 0; b < (cache.attend ? 0 : step.size()); ++b) {
      const StepSequence& s = step[b];
      const auto past = static_cast<std::size_t>(s.start);
      m.past_k.resize(past * kvd);
      m.past_v.resize(past * kvd);
      if (past > 0) cache.past(l, static_cast<std::int32_t>(b), m.past_k.data(), m.past_v.data());
      m.scores.resize(past + static_cast<std::size_t>(s.count));
      for (std::int32_t t = 0; t < s.count; ++t) {
        const std::size_t r = first + static_cast<std::size_t>(t);
        const std::size_t seen = past + static_cast<std::size_t>(t) + 1;
        for (std::int32_t head = 0; head < c.num_heads; ++head) {
          const float* q = &m.q[r * d + static_cast<std::size_t>(head) * hd];
          const std::size_t kv_offset = static_cast<std::size_t>(head / group) * hd;
          auto key = [&](std::size_t j) {
            return j < past ? &m.past_k[j * kvd + kv_offset]
                            : &m.k[(first + j - past) * kvd + kv_offset];
          };
          auto value = [&](std::size_t j) {
            return j < past ? &m.past_v[j * kvd + kv_offset]
                            : &m.v[(first + j - past) * kvd + kv_offset];
          };
          float top = -INFINITY;
          for (std::size_t j = 0; j < seen; ++j) {
            m.scores[j] = dot(q, key(j), hd) * inv_sqrt;
            top = std::max(top, m.scores[j]);
          }
          float total_weight = 0.0f;
          for (std::size_t j = 0; j < seen; ++j) {
            m.scores[j] = std::exp(m.scores[j] - top);
            total_weight += m.scores[j];
          }
          float* out = &m.att[r * d + static_cast<std::size_t>(head) * hd];
          std::fill(out, out + hd, 0.0f);
          for (std::size_t j = 0; j < seen; ++j) {
            const float weight = m.scores[j] / total_weight;
            const float* vj = value(j);
            for (std::int32_t i = 0; i < hd; ++i)
              out[i] += weight * vj[i];
          }
        }
      }
      first += static_cast<std::size_t>(s.count);
    }
    matmul(m.att.data(), total, w.wo.data(), d, d, m.proj.data());
    for (std::size_t i = 0; i < rows * d; ++i)
      m.x[i] += m.proj[i];
    for (std::size_t r = 0; r < rows; ++r)
      rms_norm(&m.x[r * d], w.ffn_norm.data(), d, c.norm_eps, &m.xb[r * d]);
    matmul(m.xb.data(), total, w.w1.data(), d, hidden, m.h1.data());
    matmul(m.xb.data(), total, w.w3.data(), d, hidden, m.h3.data());
    for (std::size_t i = 0; i < rows * hidden; ++i) {
      const float g = m.h1[i];
      m.h1[i] = g / (1.0f + std::exp(-g)) * m.h3[i];
    }
    matmul(m.h1.data(), total, w.w2.data(), hidden, d, m.proj.data());
    for (std::size_t i = 0; i < rows * d; ++i)
      m.x[i] += m.proj[i];
  }
  // Logits of the rows asked for.
  std::vector<std::size_t> wanted;
  if (every_position) {
    for (std::size_t r = 0; r < rows; ++r)
      wanted.push_back(r);
  } else {
    std::size_t end = 0;
    for (const StepSequence& s : step) {
      end += static_cast<std::size_t>(s.count);
      wanted.push_back(end - 1);
    }
  }
  std::vector<float> normed(wanted.size() * d);
  for (std::size_t i = 0; i < wanted.size(); ++i)
    rms_norm(&m.x[wanted[i] * d], weights_.final_norm.data(), d, c.norm_eps, &normed[i * d]);
  std::vector<float> logits(wanted.size() * static_cast<std::size_t>(c.vocab_size));
  matmul(normed.data(), static_cast<std::int32_t>(wanted.size()), weights_.classifier_data(), d,
         c.vocab_size, logits.data());
  return logits;
}

}  // namespace kvcache::demo
