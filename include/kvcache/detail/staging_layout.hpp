// Typed slices of one staging buffer, their offsets computed once: a table
// the host fills (staging_host) and the kernels read after upload().
//
//   StagingLayout layout;
//   auto indptr = layout.add<std::int32_t>(batch + 1);
//   auto offsets = layout.add<std::int64_t>(batch + 1);
//   ... layout.bytes() sizes the staging area; indptr.in(host) / indptr.in(device)
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvcache::detail {

template <class T>
struct StagingSlice {
  std::size_t offset = 0;
  std::size_t count = 0;

  T* in(void* base) const { return reinterpret_cast<T*>(static_cast<std::byte*>(base) + offset); }
  const T* in(const void* base) const {
    return reinterpret_cast<const T*>(static_cast<const std::byte*>(base) + offset);
  }
  // Bytes from the buffer's start through the first `used` elements: what an
  // upload must carry when this slice is the last one filled.
  std::size_t bytes_through(std::size_t used) const { return offset + used * sizeof(T); }
  std::size_t end() const { return offset + count * sizeof(T); }
};

class StagingLayout {
 public:
  template <class T>
  StagingSlice<T> add(std::size_t count) {
    constexpr std::size_t kAlign = alignof(T) > 8 ? alignof(T) : 8;
    bytes_ = (bytes_ + kAlign - 1) / kAlign * kAlign;
    StagingSlice<T> slice{bytes_, count};
    bytes_ += count * sizeof(T);
    return slice;
  }
  std::size_t bytes() const { return bytes_; }

 private:
  std::size_t bytes_ = 0;
};

}  // namespace kvcache::detail
