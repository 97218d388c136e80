// A host-memory block store: the tier below the device pool (TensorRT-LLM's
// secondary pool, SGLang's HiCache host tier, vLLM's CPU offload). A fixed
// number of slots of block_bytes each, carved from one host allocation made
// by the manager's backend (host_tier_memory: pinned memory for the CUDA
// backend, so that offloads and onboards are asynchronous DMA copies; plain
// aligned memory for the CPU backend), an index from (fingerprint, key) to
// slot, and an eviction policy of its own (any of the library's, LRU by
// default). A store may hand the blocks it evicts down to a lower store
// (set_lower: a shared tier), which then sees them as puts.
//
// Besides the BlockStore calls (copies into and out of caller memory), the
// manager side uses slot(): the host address of a block, into which a device
// page is copied (offload) or from which one is filled (onboard), so the
// bytes cross the bus once. Not thread-safe: one engine thread drives it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvcache/buffer.hpp"
#include "kvcache/error.hpp"
#include "kvcache/policy/lru.hpp"
#include "kvcache/tier/block_store.hpp"

namespace kvcache {

// A block store whose blocks sit in host memory at stable addresses, so the
// manager side copies device pages straight into and out of them.
class HostStore : public BlockStore {
 public:
  struct Slot {
    bool present = false;
    std::byte* data = nullptr;  // block_bytes() at a stable address; null for keys only
  };
  // The slot a block is to be written into (present from now on, most
  // recent; a full store evicts first). Not present when it holds nothing.
  virtual Slot store(std::uint64_t fingerprint, EvictionKey key) = 0;
  // The slot holding a block (a hit makes it most recent), or not present.
  // A block the store lacks but its lower store has is brought up first.
  virtual Slot find(std::uint64_t fingerprint, EvictionKey key) = 0;
  // Called before the host reads or overwrites a slot's bytes: the CUDA
  // backend's pending copies into or out of slots finish first.
  virtual void set_before_host_read(std::function<void()> wait) = 0;
};

template <EvictionPolicy Eviction = LruEviction>
class HostTier final : public HostStore {
 public:
  // `capacity_blocks` slots of `block_bytes`; `memory` holds them all (at
  // least capacity x block_bytes bytes, 16-byte aligned; may be empty when
  // block_bytes is 0: a tier of keys only, for metadata-only caches).
  HostTier(std::int64_t block_bytes, std::int64_t capacity_blocks, Buffer memory)
      : block_bytes_(block_bytes),
        capacity_(capacity_blocks),
        memory_(std::move(memory)),
        eviction_(capacity_blocks) {
    if (block_bytes < 0 || capacity_blocks < 0 || capacity_blocks > (std::int64_t{1} << 31)) {
      detail::raise<InvalidArgument>(
          "HostTier: block_bytes {} and capacity {} blocks (allowed: >= 0, and at most 2^31 "
          "blocks)",
          block_bytes, capacity_blocks);
    }
    if (block_bytes > 0 && block_bytes * capacity_blocks > 0 &&
        (memory_.size() < static_cast<std::size_t>(block_bytes * capacity_blocks) ||
         reinterpret_cast<std::uintptr_t>(memory_.data()) % 16 != 0)) {
      detail::raise<InvalidArgument>(
          "HostTier: {} bytes of memory at {} for {} blocks of {} bytes (needs {} bytes, 16-byte "
          "aligned)",
          memory_.size(), memory_.data(), capacity_blocks, block_bytes,
          block_bytes * capacity_blocks);
    }
    slots_.resize(static_cast<std::size_t>(capacity_blocks));
    free_.reserve(static_cast<std::size_t>(capacity_blocks));
    for (std::int64_t s = capacity_blocks; s-- > 0;)
      free_.push_back(static_cast<std::int32_t>(s));
    index_.reserve(static_cast<std::size_t>(capacity_blocks));
  }

  std::string_view name() const override { return "host"; }
  std::int64_t block_bytes() const override { return block_bytes_; }
  std::int64_t capacity_blocks() const override { return capacity_; }
  std::int64_t size_blocks() const override { return static_cast<std::int64_t>(index_.size()); }

  // The store below this one: blocks this one evicts are put there first,
  // and blocks it lacks are looked for there (and brought up) on find and
  // contains.
  void set_lower(BlockStore* lower) {
    if (lower != nullptr && lower->block_bytes() != block_bytes_) {
      detail::raise<InvalidArgument>("HostTier: a lower store of {}-byte blocks under {}-byte ones",
                                     lower->block_bytes(), block_bytes_);
    }
    lower_ = lower;
  }
  BlockStore* lower() const { return lower_; }
  BlockStore* shared_store() override {
    return lower_ == nullptr ? nullptr : lower_->shared_store();
  }
  void set_before_host_read(std::function<void()> wait) override {
    before_host_read_ = std::move(wait);
  }

  // ---- slots (the manager side) ----------------------------------------------------

  Slot store(std::uint64_t fingerprint, EvictionKey key) override {
    if (capacity_ == 0) {
      ++stats_.rejected;
      return {};
    }
    const EvictionKey id = entry_id(fingerprint, key);
    std::int32_t slot;
    if (auto it = index_.find(id); it != index_.end() && matches(it->second, fingerprint, key)) {
      slot = it->second;
      eviction_.erase(id);
    } else {
      if (it != index_.end()) drop(it->second, id, false);  // an id collision: the old one goes
      if (free_.empty()) evict_one();
      slot = free_.back();
      free_.pop_back();
      slots_[static_cast<std::size_t>(slot)] = Entry{fingerprint, key, true};
      index_.emplace(id, slot);
    }
    eviction_.on_access(id);
    eviction_.insert(id);
    ++stats_.puts;
    stats_.bytes_in += block_bytes_;
    return {true, data_of(slot)};
  }

  Slot find(std::uint64_t fingerprint, EvictionKey key) override {
    const EvictionKey id = entry_id(fingerprint, key);
    auto it = index_.find(id);
    if (it == index_.end() || !matches(it->second, fingerprint, key)) {
      if (lower_ != nullptr && capacity_ > 0) return bring_up(fingerprint, key);
      ++stats_.misses;
      return {};
    }
    eviction_.erase(id);
    eviction_.on_access(id);
    eviction_.insert(id);
    ++stats_.hits;
    stats_.bytes_out += block_bytes_;
    return {true, data_of(it->second)};
  }

  // ---- BlockStore --------------------------------------------------------------------

  bool put(std::uint64_t fingerprint, EvictionKey key, std::span<const std::byte> bytes) override {
    if (static_cast<std::int64_t>(bytes.size()) != block_bytes_) {
      ++stats_.rejected;
      return false;
    }
    const Slot slot = store(fingerprint, key);
    if (!slot.present) return false;
    if (block_bytes_ > 0) {
      before_host_read();  // a pending device copy into this slot must not land after this
      std::memcpy(slot.data, bytes.data(), bytes.size());
    }
    return true;
  }

  bool get(std::uint64_t fingerprint, EvictionKey key, std::span<std::byte> out) override {
    if (static_cast<std::int64_t>(out.size()) != block_bytes_) return false;
    const Slot slot = find(fingerprint, key);
    if (!slot.present) return false;
    if (block_bytes_ > 0) {
      before_host_read();
      std::memcpy(out.data(), slot.data, out.size());
    }
    return true;
  }

  // A block counts when this store or the one below has it.
  std::size_t contains(std::uint64_t fingerprint, std::span<const EvictionKey> keys) override {
    std::size_t n = 0;
    std::size_t lower_end = 0;  // the lower store has been asked up to here (and lacks it)
    while (n < keys.size()) {
      auto it = index_.find(entry_id(fingerprint, keys[n]));
      if (it != index_.end() && matches(it->second, fingerprint, keys[n])) {
        ++n;
        continue;
      }
      // Neither here nor, as the lower store already answered, below.
      if (lower_ == nullptr || (lower_end > 0 && n >= lower_end)) break;
      const std::size_t below = lower_->contains(fingerprint, keys.subspan(n));
      if (below == 0) break;
      n += below;
      lower_end = n;
    }
    return n;
  }

  bool erase(std::uint64_t fingerprint, EvictionKey key) override {
    const EvictionKey id = entry_id(fingerprint, key);
    auto it = index_.find(id);
    if (it == index_.end() || !matches(it->second, fingerprint, key)) return false;
    drop(it->second, id, false);
    ++stats_.erases;
    return true;
  }

  TierStats stats() const override {
    TierStats s = stats_;
    s.capacity_blocks = capacity_;
    s.blocks = size_blocks();
    return s;
  }

  // Throws Error describing the first broken invariant (tests).
  void check_invariants() const {
    if (static_cast<std::int64_t>(index_.size() + free_.size()) != capacity_) {
      detail::raise<Error>("HostTier: {} indexed + {} free slots != capacity {}", index_.size(),
                           free_.size(), capacity_);
    }
    if (eviction_.size() != static_cast<std::int64_t>(index_.size())) {
      detail::raise<Error>("HostTier: the eviction policy holds {} entries, the index {}",
                           eviction_.size(), index_.size());
    }
    for (const auto& [id, slot] : index_) {
      const Entry& e = slots_[static_cast<std::size_t>(slot)];
      if (!e.used || entry_id(e.fingerprint, e.key) != id)
        detail::raise<Error>("HostTier: slot {} does not hold the entry indexed to it", slot);
    }
  }

 private:
  struct Entry {
    std::uint64_t fingerprint = 0;
    EvictionKey key = 0;
    bool used = false;
  };

  // The policy's key of an entry: 63 bits of a hash of both parts, never 0.
  static EvictionKey entry_id(std::uint64_t fingerprint, EvictionKey key) {
    const std::uint64_t parts[2] = {fingerprint, key};
    const EvictionKey id = XXH3_64bits(parts, sizeof(parts)) & ~kSequenceKeyBit;
    return id == 0 ? 1 : id;
  }
  bool matches(std::int32_t slot, std::uint64_t fingerprint, EvictionKey key) const {
    const Entry& e = slots_[static_cast<std::size_t>(slot)];
    return e.used && e.fingerprint == fingerprint && e.key == key;
  }
  std::byte* data_of(std::int32_t slot) const {
    return block_bytes_ == 0 ? nullptr : memory_.bytes_data() + std::int64_t{slot} * block_bytes_;
  }
  void before_host_read() {
    if (before_host_read_) before_host_read_();
  }

  // Frees a slot (its entry's contents are gone from this store).
  void drop(std::int32_t slot, EvictionKey id, bool evicted) {
    eviction_.forget(id);
    index_.erase(id);
    slots_[static_cast<std::size_t>(slot)] = Entry{};
    free_.push_back(slot);
    if (evicted) ++stats_.evictions;
  }

  // Makes one slot free by the policy, handing the block down when there is
  // a lower store.
  void evict_one() {
    const std::optional<EvictionKey> victim = eviction_.pop_victim();
    if (!victim) detail::raise<Error>("HostTier: full with nothing to evict");
    const std::int32_t slot = index_.at(*victim);
    const Entry entry = slots_[static_cast<std::size_t>(slot)];
    if (lower_ != nullptr) {
      if (block_bytes_ > 0) before_host_read();
      const std::span<const std::byte> bytes(data_of(slot), static_cast<std::size_t>(block_bytes_));
      if (lower_->put(entry.fingerprint, entry.key, bytes)) ++stats_.demotions;
    }
    drop(slot, *victim, true);
  }

  // A block found below: a slot here, filled from the lower store (a miss,
  // and the slot given back, when the lower store cannot read it after all).
  Slot bring_up(std::uint64_t fingerprint, EvictionKey key) {
    if (lower_->contains(fingerprint, std::span<const EvictionKey>(&key, 1)) == 0) {
      ++stats_.misses;
      return {};
    }
    const Slot slot = store(fingerprint, key);
    --stats_.puts;
    stats_.bytes_in -= block_bytes_;
    if (block_bytes_ > 0) before_host_read();
    if (!slot.present ||
        !lower_->get(fingerprint, key,
                     std::span<std::byte>(slot.data, static_cast<std::size_t>(block_bytes_)))) {
      if (slot.present) {
        erase(fingerprint, key);
        --stats_.erases;
      }
      ++stats_.misses;
      return {};
    }
    ++stats_.hits;
    ++stats_.promotions;
    stats_.bytes_out += block_bytes_;
    return slot;
  }

  std::int64_t block_bytes_;
  std::int64_t capacity_;
  Buffer memory_;
  Eviction eviction_;
  std::vector<Entry> slots_;
  std::vector<std::int32_t> free_;
  std::unordered_map<EvictionKey, std::int32_t> index_;  // entry id -> slot
  BlockStore* lower_ = nullptr;
  std::function<void()> before_host_read_;
  TierStats stats_;
};

}  // namespace kvcache
