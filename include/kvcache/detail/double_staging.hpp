// Two staging areas used in turn: the host fills one while the upload of the
// other may still be in flight. A backend's staging_host() waits only for the
// previous upload of the same area (CudaBackend: that area's event), so
// preparing step N + 1 waits for step N - 1's upload, never for step N's
// kernels. A pointer from upload() stays valid until the next upload but one.
#pragma once

#include <cstddef>

namespace kvcache::detail {

template <class Backend>
class DoubleStaging {
 public:
  DoubleStaging(Backend& backend, std::size_t bytes)
      : areas_{backend.make_staging(bytes), backend.make_staging(bytes)} {}

  // The host side of the area the next upload sends.
  void* host(Backend& backend) { return backend.staging_host(areas_[next_]); }
  // Sends `bytes` of that area and turns to the other one.
  const void* upload(Backend& backend, std::size_t bytes) {
    const void* device = backend.upload(areas_[next_], bytes);
    next_ ^= 1;
    return device;
  }

 private:
  typename Backend::Staging areas_[2];
  int next_ = 0;
};

}  // namespace kvcache::detail
