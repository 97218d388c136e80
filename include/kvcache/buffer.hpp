// A move-only owner of one allocation in some backend's memory.
#pragma once

#include <cstddef>
#include <utility>

namespace kvcache {

class Buffer {
 public:
  using Deleter = void (*)(void*) noexcept;

  Buffer() = default;
  Buffer(void* data, std::size_t bytes, Deleter deleter) noexcept
      : data_(data), bytes_(bytes), deleter_(deleter) {}
  Buffer(Buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)),
        deleter_(std::exchange(other.deleter_, nullptr)) {}
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
      deleter_ = std::exchange(other.deleter_, nullptr);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  void* data() const noexcept { return data_; }
  std::byte* bytes_data() const noexcept { return static_cast<std::byte*>(data_); }
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }
  std::size_t size() const noexcept { return bytes_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  void reset() noexcept {
    if (data_ != nullptr && deleter_ != nullptr) deleter_(data_);
    data_ = nullptr;
    bytes_ = 0;
    deleter_ = nullptr;
  }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Deleter deleter_ = nullptr;
};

}  // namespace kvcache
