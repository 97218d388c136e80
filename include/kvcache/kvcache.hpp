// The whole public interface of kvcache (header-only parts and the backends).
#pragma once

#include "kvcache/backend/cuda.hpp"
#include "kvcache/backend/host.hpp"
#include "kvcache/backend/metadata.hpp"
#include "kvcache/block_pool.hpp"
#include "kvcache/codec/codecs.hpp"
#include "kvcache/codec/fp8.hpp"
#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/error.hpp"
#include "kvcache/layout.hpp"
#include "kvcache/manager.hpp"
#include "kvcache/model_shape.hpp"
#include "kvcache/page_table.hpp"
#include "kvcache/policy/cache_policy.hpp"
#include "kvcache/reencode.hpp"
#include "kvcache/tensor.hpp"
