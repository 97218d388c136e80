// A small decoder-only transformer in the Llama shape (RMSNorm, rotary
// embeddings, grouped-query attention, SwiGLU) for kvcache-demo: seeded
// random weights, or a checkpoint in llama2.c's binary format.
//
// Every matrix product sums each output in the same fixed order whatever the
// batch (8 lanes, combined in a fixed tree), so a token's keys, values and
// logits are the same bits whether it was computed alone, in a prefill batch
// or in a full recompute: the cache can then be checked end to end exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kvcache/error.hpp"

namespace kvcache::demo {

struct ModelConfig {
  std::int32_t dim = 512;
  std::int32_t hidden_dim = 1408;
  std::int32_t num_layers = 4;
  std::int32_t num_heads = 8;
  std::int32_t num_kv_heads = 2;
  std::int32_t vocab_size = 4096;
  std::int32_t max_seq_len = 4096;  // positions a loaded checkpoint was trained for
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;

  std::int32_t head_dim() const { return dim / num_heads; }
  std::int32_t kv_dim() const { return num_kv_heads * head_dim(); }
  // Throws InvalidArgument naming the field that is out of range.
  void validate() const;
};

// Row-major [out][in] matrices, as llama2.c stores them.
struct LayerWeights {
  std::vector<float> attn_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3;
};

struct Weights {
  ModelConfig config;
  std::vector<float> embedding;  // [vocab][dim]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  std::vector<float> classifier;  // [vocab][dim]; empty: tied to the embedding
  std::string source;             // "random (seed N)" or the file's path

  const float* classifier_data() const {
    return classifier.empty() ? embedding.data() : classifier.data();
  }
};

// Weights scaled so activations keep unit size through the layers.
Weights random_weights(const ModelConfig& config, std::uint64_t seed);

// A file in llama2.c's format: seven int32 (dim, hidden_dim, n_layers,
// n_heads, n_kv_heads, vocab_size (negative: an unshared classifier follows),
// seq_len), then float32 tensors: embedding, rms_att, wq, wk, wv, wo, rms_ffn,
// w1, w2, w3, rms_final, two RoPE tables of seq_len x head_dim / 2 (skipped:
// the rotation is recomputed), and the classifier when unshared. A short,
// truncated, oversized or inconsistent file, or a non-finite weight, throws
// InvalidArgument naming the field or the byte counts.
Weights load_llama2c(const std::string& path);

// out[r][o] = sum_i x[r][i] * w[o][i] for r < rows, o < out_dim, each sum in
// a fixed order (see above).
void matmul(const float* x, std::int32_t rows, const float* w, std::int32_t in_dim,
            std::int32_t out_dim, float* out);

// One sequence's part of a forward step: `count` new tokens at positions
// [start, start + count).
struct StepSequence {
  std::int64_t start = 0;
  std::int32_t count = 0;
  const std::int32_t* tokens = nullptr;
};

// The cache as the model sees it. For a layer, `store` receives the step's
// new K and V rows ([new tokens of the whole step][kv_dim], sequences in
// order) and `past` fills the keys and values of sequence b's positions
// [0, start) ([start][kv_dim] each). When `attend` is set the cache side
// computes the layer's attention itself, after `store`: from the step's
// queries ([rows][dim], rotated) it writes each row's attention output
// ([rows][dim]) over its sequence's keys up to the row's position, and
// `past` is not called.
struct KvAccess {
  std::function<void(std::int32_t layer, const float* k, const float* v)> store;
  std::function<void(std::int32_t layer, std::int32_t b, float* k, float* v)> past;
  std::function<void(std::int32_t layer, const float* q, float* out)> attend;
};

class Model {
 public:
  explicit Model(Weights weights);
  const ModelConfig& config() const { return weights_.config; }
  const Weights& weights() const { return weights_; }

  // Runs the step's tokens through every layer and returns the logits of
  // each sequence's last new token ([sequences][vocab]).
  std::vector<float> forward(std::span<const StepSequence> step, const KvAccess& cache) const;

  // The logits after every position of `tokens`, recomputed from scratch
  // without any cache ([tokens][vocab]): the reference for the cache tests.
  std::vector<float> recompute(std::span<const std::int32_t> tokens) const;

 private:
  std::vector<float> forward_rows(std::span<const StepSequence> step, const KvAccess& cache,
                                  bool every_position) const;
  void rotate(float* row, std::int32_t width, std::int64_t position) const;

  Weights weights_;
  std::vector<float> inverse_frequency_;  // [head_dim / 2]
};

}  // namespace kvcache::demo
