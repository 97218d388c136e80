// Forward declarations of the classes an engine names, so that a header
// which only mentions them (manager.hpp among others) includes no backend.
#pragma once

#include "kvcache/backend/concepts.hpp"

namespace kvcache {

class HostBackend;      // backend/host.hpp
class MetadataBackend;  // backend/metadata.hpp
class CudaBackend;      // backend/cuda.hpp
class AppendBatch;      // append_batch.hpp

template <class Policy, MemoryBackend Backend>
class KVCacheManager;  // manager.hpp

namespace detail {
struct ManagerAccess;  // detail/manager_access.hpp
}  // namespace detail

}  // namespace kvcache
