// Helpers shared by the tests: random K/V data, a recorder of what was
// appended (the reference the cache must read back), state snapshots for the
// "nothing half-applied" checks, and error-message assertions.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kvcache/kvcache.hpp"
#include "snapshot.hpp"

namespace kvcache::testing {

// Fresh random bits in the dtype (finite values from N(0, 1)); seeded from the
// test's own seed so a failure can be replayed.
inline std::vector<std::byte> random_rows(DType dtype, std::int64_t elements,
                                          std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::byte> data(static_cast<std::size_t>(elements * dtype_size(dtype)));
  for (std::int64_t i = 0; i < elements; ++i)
    store_from_float(data.data(), dtype, i, normal(rng));
  return data;
}

// Kernel tests over every dtype, head_dim 64 / 128 / 256 and both layouts,
// named like fp16_d128_NHD.
using DTypeDimLayout = std::tuple<DType, std::int32_t, KVLayout>;
inline auto every_dtype_dim_layout() {
  return ::testing::Combine(::testing::Values(DType::kF16, DType::kBF16, DType::kF32),
                            ::testing::Values(64, 128, 256),
                            ::testing::Values(KVLayout::kNHD, KVLayout::kHND));
}
inline std::string dtype_dim_layout_name(const ::testing::TestParamInfo<DTypeDimLayout>& info) {
  return std::string(dtype_name(std::get<0>(info.param))) + "_d" +
         std::to_string(std::get<1>(info.param)) + "_" +
         std::string(layout_name(std::get<2>(info.param)));
}

// Buffer in a backend's memory holding `bytes` copied from the host.
template <class Backend>
Buffer to_backend(Backend& backend, const std::vector<std::byte>& host) {
  Buffer buffer = backend.allocate(host.size());
  backend.copy_to_backend(buffer.data(), host.data(), host.size());
  return buffer;
}

template <class Backend>
std::vector<std::byte> to_host(Backend& backend, const Buffer& buffer, std::size_t bytes) {
  std::vector<std::byte> host(bytes);
  backend.copy_to_host(host.data(), buffer.data(), bytes);
  return host;
}

// Every token ever committed per (sequence, layer): packed K and V rows.
struct Recorded {
  std::map<std::pair<SeqId, std::int32_t>, std::vector<std::byte>> k, v;
};

// Drives a manager with random steps and records what each sequence holds.
template <class Manager>
class StepDriver {
 public:
  StepDriver(Manager& manager, std::uint64_t seed) : manager_(manager), rng_(seed) {}

  // One engine step: reserve, prepare, append every layer, commit. Returns
  // false (and appends nothing) when the pool is full.
  bool step(const std::vector<SeqId>& seqs, const std::vector<std::int32_t>& counts) {
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      if (manager_.try_reserve(seqs[i], counts[i]) != ReserveStatus::kOk) return false;
    }
    AppendBatch batch = manager_.prepare_append(seqs, counts);
    append_layers(batch);
    manager_.commit(batch);
    return true;
  }

  void append_layers(const AppendBatch& batch) {
    const ModelShape& shape = manager_.shape();
    const std::int64_t row = shape.kv_width() * dtype_size(shape.dtype);
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      auto k = random_rows(shape.dtype, batch.num_tokens() * shape.kv_width(), rng_);
      auto v = random_rows(shape.dtype, batch.num_tokens() * shape.kv_width(), rng_);
      Buffer dk = to_backend(manager_.backend(), k);
      Buffer dv = to_backend(manager_.backend(), v);
      manager_.append(layer, batch, tensor(dk, batch.num_tokens()), tensor(dv, batch.num_tokens()));
      manager_.backend().synchronize();
      std::int64_t offset = 0;
      for (std::size_t i = 0; i < batch.sequences().size(); ++i) {
        const auto bytes = static_cast<std::size_t>(batch.new_tokens()[i] * row);
        auto& rk = recorded.k[{batch.sequences()[i], layer}];
        auto& rv = recorded.v[{batch.sequences()[i], layer}];
        rk.insert(rk.end(), k.begin() + offset,
                  k.begin() + offset + static_cast<std::ptrdiff_t>(bytes));
        rv.insert(rv.end(), v.begin() + offset,
                  v.begin() + offset + static_cast<std::ptrdiff_t>(bytes));
        offset += static_cast<std::int64_t>(bytes);
      }
    }
  }

  TensorView tensor(const Buffer& buffer, std::int64_t tokens) const {
    const ModelShape& shape = manager_.shape();
    return TensorView::packed(buffer.data(), shape.dtype, tokens, shape.num_kv_heads,
                              shape.head_dim);
  }

  // Gathers (seq, layer) through the manager and compares with the record.
  ::testing::AssertionResult reads_back(SeqId seq, std::int32_t layer) {
    const ModelShape& shape = manager_.shape();
    const std::int64_t tokens = manager_.sequence(seq).num_tokens;
    const auto bytes =
        static_cast<std::size_t>(tokens * shape.kv_width() * dtype_size(shape.dtype));
    Buffer k = manager_.backend().allocate(bytes);
    Buffer v = manager_.backend().allocate(bytes);
    manager_.gather(seq, layer, tensor(k, tokens), tensor(v, tokens));
    const auto hk = to_host(manager_.backend(), k, bytes);
    const auto hv = to_host(manager_.backend(), v, bytes);
    const auto& rk = recorded.k[{seq, layer}];
    const auto& rv = recorded.v[{seq, layer}];
    if (rk.size() != bytes) {
      return ::testing::AssertionFailure()
             << "sequence " << seq << " has " << bytes << " bytes, recorded " << rk.size();
    }
    if (bytes != 0 && std::memcmp(hk.data(), rk.data(), bytes) != 0) {
      return ::testing::AssertionFailure()
             << "K of sequence " << seq << " layer " << layer << " differs";
    }
    if (bytes != 0 && std::memcmp(hv.data(), rv.data(), bytes) != 0) {
      return ::testing::AssertionFailure()
             << "V of sequence " << seq << " layer " << layer << " differs";
    }
    return ::testing::AssertionSuccess();
  }

  std::mt19937_64& rng() { return rng_; }
  Recorded recorded;

 private:
  Manager& manager_;
  std::mt19937_64 rng_;
};

// Asserts that `call` throws E whose message contains every fragment.
template <class E>
::testing::AssertionResult throws_with(const std::function<void()>& call,
                                       const std::vector<std::string>& fragments) {
  try {
    call();
  } catch (const E& error) {
    const std::string message = error.what();
    for (const auto& fragment : fragments) {
      if (message.find(fragment) == std::string::npos) {
        return ::testing::AssertionFailure()
               << "message \"" << message << "\" lacks \"" << fragment << "\"";
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& other) {
    return ::testing::AssertionFailure() << "threw another exception: " << other.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

inline std::uint64_t test_seed() {
  // A fresh seed per run (printed by the tests that use it), or a fixed one
  // from KVCACHE_TEST_SEED to replay a failure.
  if (const char* fixed = std::getenv("KVCACHE_TEST_SEED"))
    return std::strtoull(fixed, nullptr, 10);
  return std::random_device{}();
}

// How many operations a model-based random test runs: `fallback`, or
// KVCACHE_MODEL_OPS for a long run by hand.
inline std::int64_t model_operations(std::int64_t fallback) {
  if (const char* ops = std::getenv("KVCACHE_MODEL_OPS")) {
    const long long n = std::strtoll(ops, nullptr, 10);
    if (n > 0) return n;
  }
  return fallback;
}

}  // namespace kvcache::testing
