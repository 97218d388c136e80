// The fuzz input as a stream of choices: each call takes the next bytes and
// maps them to a value; an exhausted input yields zeros, so every input is a
// complete run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvcache::fuzz {

class FuzzInput {
 public:
  FuzzInput(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  bool empty() const { return offset_ >= size_; }

  std::uint8_t byte() { return empty() ? 0 : data_[offset_++]; }

  // A value in [0, n): one byte when n fits in one, two otherwise.
  std::uint32_t below(std::uint32_t n) {
    if (n <= 1) return 0;
    const std::uint32_t raw =
        n <= 256 ? byte() : (static_cast<std::uint32_t>(byte()) << 8) | byte();
    return raw % n;
  }

  // Eight bytes as a signed 64-bit value: extremes included.
  std::int64_t wide() {
    std::uint64_t raw = 0;
    for (int i = 0; i < 8; ++i)
      raw = (raw << 8) | byte();
    std::int64_t value;
    std::memcpy(&value, &raw, sizeof value);
    return value;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
};

}  // namespace kvcache::fuzz
