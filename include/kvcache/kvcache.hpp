// The whole public interface of kvcache: the manager and its exports, every
// strategy and codec, and the three backends.
#pragma once

#include "kvcache/append_batch.hpp"
#include "kvcache/backend/cuda.hpp"
#include "kvcache/backend/host.hpp"
#include "kvcache/backend/metadata.hpp"
#include "kvcache/block_pool.hpp"
#include "kvcache/codec/codecs.hpp"
#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/error.hpp"
#include "kvcache/export.hpp"
#include "kvcache/fwd.hpp"
#include "kvcache/layout.hpp"
#include "kvcache/manager.hpp"
#include "kvcache/model_shape.hpp"
#include "kvcache/page_table.hpp"
#include "kvcache/policy/cache_policy.hpp"
#include "kvcache/reencode.hpp"
#include "kvcache/tensor.hpp"
#include "kvcache/types.hpp"
#include "kvcache/version.hpp"
