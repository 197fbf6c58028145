// The warm pool: per language, VMs booted (or restored) with their
// interpreter already waiting, each used once; and per package set the
// operator names (pool_layers), VMs with that layer attached. Refilled in the background,
// one boot at a time by default; health-checked with pings; VMs idle past
// their maximum age are replaced. Pool VMs count against the fleet's
// budget, and a run that finds no room may evict the oldest.
#pragma once

#include <uv.h>

#include <array>
#include <chrono>
#include <deque>
#include <functional>
#include <map>

#include "daemon/fleet.h"
#include "daemon/layers.h"
#include "daemon/snapshot_flow.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

inline constexpr size_t kLanguageCount = 3;

// Defaults come from Config (config.h) through options_from (options.h).
struct PoolOptions {
  std::array<uint32_t, kLanguageCount> size{0, 0, 0};  // index: Language
  uint32_t memory_mb = 0;                               // only runs of this size are served warm
  uint32_t refill_concurrency = 1;
  std::chrono::milliseconds max_idle{};
  std::chrono::milliseconds health_interval{};
  // After a boot fails, refills wait this long: broken images or a missing
  // QEMU must not turn into a busy loop of boots.
  std::chrono::milliseconds refill_backoff{5'000};
  bool restore = false;  // pool VMs restore from snapshots when there are some
  bool warm_up = false;  // restored VMs run a trivial program first (TCG)
};

class WarmPool {
 public:
  // `may_refill` says whether refills may use the room now (not while runs wait).
  WarmPool(uv_loop_t* loop, Fleet& fleet, SnapshotFlow& snapshots, PoolOptions options,
           std::function<bool()> may_refill);
  ~WarmPool();

  // Starts the health checks and the first refill.
  void start();
  // Warm VMs of a package layer from now on: `count` of them, with `layer`
  // (held while the pool lives, so it is never evicted).
  void add_layer_lane(Language language, uint32_t count, std::shared_ptr<LayerGrant> layer);
  // `layer`: the identity of the run's layer (LayerGrant::identity), or empty.
  bool eligible(Language language, uint32_t memory_mb, const std::string& layer = {}) const;
  // A ready VM of `language` (its handlers are the caller's to set), or null.
  std::unique_ptr<VmHandle> take(Language language, const std::string& layer = {});
  void count(Language language, bool hit, const std::string& layer = {});
  // Releases the oldest ready VM, else a booting one: room for a run.
  bool evict_one();
  // Starts boots while the pool is short, room and concurrency allow.
  void refill();
  // Empties the pool and stops refilling (shutdown).
  void stop();
  std::vector<PoolInfo> stats() const;
  uint64_t boot_failures() const { return boot_failures_; }

 private:
  struct Idle {
    std::unique_ptr<VmHandle> vm;
    std::chrono::steady_clock::time_point since;
    uint64_t ping_seq = 0;  // outstanding ping, 0 when answered
  };
  struct Lane {
    Language language = Language::python;
    uint32_t target = 0;
    std::shared_ptr<LayerGrant> layer;  // null: a language's lane
    std::deque<Idle> ready;
    std::map<VmHandle*, std::unique_ptr<VmHandle>> booting;
    uint64_t hits = 0, misses = 0;
  };
  Lane* lane(Language language, const std::string& layer);
  const Lane* lane(Language language, const std::string& layer) const;
  void on_ready(size_t lane, VmHandle* vm);
  void on_boot_failed(size_t lane, VmHandle* vm, bool restored, const Error& e);
  void remove_ready(VmHandle* vm, const std::string& why);
  void health_tick();
  void back_off();

  Fleet& fleet_;
  SnapshotFlow& snapshots_;
  PoolOptions options_;
  std::function<bool()> may_refill_;
  // The languages' lanes first (index: Language), then the layers'. Only
  // ever appended to: handlers name a lane by its index.
  std::deque<Lane> lanes_;
  uint64_t next_ping_ = 1;
  bool stopped_ = false;
  uint64_t boot_failures_ = 0;
  UvHandle<uv_timer_t> health_;
  UvHandle<uv_timer_t> backoff_;
  Deferred later_;
};

}  // namespace sandbox::daemon
