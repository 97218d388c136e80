// What the free functions around a manager (the exports, checkpoints,
// publish_prefix) read
// and change of its internals; the manager befriends this one struct.
#pragma once

#include <cstddef>

#include "kvcache/fwd.hpp"

namespace kvcache::detail {

struct ManagerAccess {
  // A fresh sequence entry (the manager's private type).
  template <class Manager>
  static auto new_entry() {
    return typename Manager::Entry{};
  }
  template <class Manager>
  static const auto& sequences(const Manager& m) {
    return m.sequences_;
  }
  template <class Manager>
  static auto& sequences(Manager& m) {
    return m.sequences_;
  }
  template <class Manager>
  static void check_batch(const Manager& m, const AppendBatch& batch, const char* what) {
    m.batches_.check(batch, what);
  }
  template <class Manager>
  static auto& ledger(Manager& m) {
    return m.ledger_;
  }
  template <class Manager>
  static auto& tiers(Manager& m) {
    return m.tiers_;
  }
  template <class Manager>
  static std::byte* arena(Manager& m) {
    return m.arena_.bytes_data();
  }
  // A callable that drops a parked sequence the eviction policy chose.
  template <class Manager>
  static auto drop_sequence(Manager& m) {
    return m.drop_sequence();
  }
  template <class Manager>
  static bool attach(Manager& m, typename Manager::Entry& s) {
    return m.attach(s);
  }
  template <class Manager>
  static void invalidate_batches(Manager& m) {
    m.batches_.invalidate();
  }
  template <class Manager>
  static auto& meter(Manager& m) {
    return m.meter_;
  }
  template <class Manager>
  static const auto& codec_storage(const Manager& m) {
    return m.codec_;
  }
};

}  // namespace kvcache::detail
