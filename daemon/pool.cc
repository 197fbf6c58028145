#include "daemon/pool.h"

#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

size_t index_of(Language l) { return static_cast<size_t>(l); }

}  // namespace

WarmPool::WarmPool(uv_loop_t* loop, Fleet& fleet, SnapshotFlow& snapshots, PoolOptions options,
                   std::function<bool()> may_refill)
    : fleet_(fleet), snapshots_(snapshots), options_(options), may_refill_(std::move(may_refill)), later_(loop) {
  auto timer = [&] { return UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); }); };
  health_ = timer();
  backoff_ = timer();
}

WarmPool::~WarmPool() { stop(); }

void WarmPool::start() {
  auto every = static_cast<uint64_t>(options_.health_interval.count());
  uv_timer_start(health_.get(), [](uv_timer_t* t) {
    if (auto* p = owner_of<WarmPool>(t)) p->health_tick();
  }, every, every);
  refill();
}

bool WarmPool::eligible(Language language, uint32_t memory_mb) const {
  return options_.size[index_of(language)] > 0 && memory_mb == options_.memory_mb;
}

std::unique_ptr<VmHandle> WarmPool::take(Language language) {
  auto& ready = lanes_[index_of(language)].ready;
  while (!ready.empty()) {
    auto vm = std::move(ready.front().vm);
    ready.pop_front();
    if (vm->state() == VmHandle::State::ready) {
      later_.post([this] { refill(); });  // refill behind it, never inside the caller
      return vm;
    }
    fleet_.release(std::move(vm));
  }
  return nullptr;
}

void WarmPool::count(Language language, bool hit) {
  auto& lane = lanes_[index_of(language)];
  ++(hit ? lane.hits : lane.misses);
}

bool WarmPool::evict_one() {
  Lane* oldest = nullptr;
  for (auto& lane : lanes_)
    if (!lane.ready.empty() && (!oldest || lane.ready.front().since < oldest->ready.front().since)) oldest = &lane;
  if (oldest) {
    fleet_.release(std::move(oldest->ready.front().vm));
    oldest->ready.pop_front();
    return true;
  }
  for (auto& lane : lanes_)
    if (!lane.booting.empty()) {
      fleet_.release(std::move(lane.booting.begin()->second));
      lane.booting.erase(lane.booting.begin());
      return true;
    }
  return false;
}

void WarmPool::refill() {
  if (stopped_ || uv_is_active(reinterpret_cast<uv_handle_t*>(backoff_.get())) || (may_refill_ && !may_refill_()))
    return;
  for (;;) {
    uint32_t booting = 0;
    for (auto& lane : lanes_) booting += static_cast<uint32_t>(lane.booting.size());
    if (booting >= options_.refill_concurrency || !fleet_.has_room()) return;
    // The language furthest below its target goes first.
    size_t best = kLanguageCount;
    int64_t best_gap = 0;
    for (size_t i = 0; i < kLanguageCount; ++i) {
      int64_t gap = int64_t{options_.size[i]} - int64_t(lanes_[i].ready.size() + lanes_[i].booting.size());
      if (gap > best_gap) best = i, best_gap = gap;
    }
    if (best == kLanguageCount) return;
    auto language = static_cast<Language>(best);
    // The handlers find their VM through this cell: it does not exist yet.
    auto self = std::make_shared<VmHandle*>(nullptr);
    auto restored = std::make_shared<bool>(false);
    VmEvents ev;
    ev.ready = [this, language, self] { on_ready(language, *self); };
    ev.failed = [this, language, self, restored](Error e) { on_boot_failed(language, *self, *restored, e); };
    std::string how;
    // Pool VMs wait for callers anyway: under TCG, a restored VM spends that
    // time warming its translation cache rather than the first run's.
    VmShape shape{options_.memory_mb, language, options_.warm_up};
    auto vm = fleet_.start(snapshots_.plan(shape, language, options_.restore, &how), std::move(ev));
    if (!vm) {
      log_error("warm pool: cannot start a VM: " + vm.error().describe());
      return back_off();
    }
    *self = vm->get();
    *restored = how == "snapshot";
    lanes_[best].booting.emplace(vm->get(), std::move(*vm));
  }
}

void WarmPool::back_off() {
  uv_timer_start(backoff_.get(), [](uv_timer_t* t) {
    if (auto* p = owner_of<WarmPool>(t)) p->refill();
  }, static_cast<uint64_t>(options_.refill_backoff.count()), 0);
}

void WarmPool::on_ready(Language language, VmHandle* vm) {
  auto& lane = lanes_[index_of(language)];
  auto it = lane.booting.find(vm);
  if (it == lane.booting.end()) return;
  auto owned = std::move(it->second);
  lane.booting.erase(it);
  if (owned->prestarted() != language)
    log_warning("warm pool: a " + std::string(language_name(language)) +
                " VM came up without its interpreter; runs on it start one");
  VmEvents ev;
  ev.failed = [this, vm](Error e) { remove_ready(vm, e.message.substr(0, 200)); };
  ev.pong = [this, vm](uint64_t seq) {
    for (auto& l : lanes_)
      for (auto& idle : l.ready)
        if (idle.vm.get() == vm && idle.ping_seq == seq) idle.ping_seq = 0;
  };
  owned->set_events(std::move(ev));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(owned->ready_at() - owned->started_at());
  log_debug("warm pool: " + std::string(language_name(language)) + " VM ready in " + std::to_string(took.count()) +
            " ms");
  lane.ready.push_back(Idle{std::move(owned), std::chrono::steady_clock::now(), 0});
  later_.post([this] { refill(); });
}

void WarmPool::on_boot_failed(Language language, VmHandle* vm, bool restored, const Error& e) {
  auto& lane = lanes_[index_of(language)];
  auto it = lane.booting.find(vm);
  if (it == lane.booting.end()) return;
  ++boot_failures_;
  log_warning("warm pool: " + std::string(language_name(language)) + " VM failed to boot: " +
              e.describe().substr(0, 300));
  if (restored) snapshots_.restore_failed(language, options_.memory_mb, e);
  fleet_.release(std::move(it->second));
  lane.booting.erase(it);
  back_off();
}

void WarmPool::remove_ready(VmHandle* vm, const std::string& why) {
  for (auto& lane : lanes_)
    for (auto it = lane.ready.begin(); it != lane.ready.end(); ++it)
      if (it->vm.get() == vm) {
        log_info("warm pool: replacing a VM: " + why);
        fleet_.release(std::move(it->vm));
        lane.ready.erase(it);
        later_.post([this] { refill(); });
        return;
      }
}

void WarmPool::health_tick() {
  auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<VmHandle*, std::string>> drop;
  for (auto& lane : lanes_)
    for (auto& idle : lane.ready) {
      if (now - idle.since > options_.max_idle)
        drop.emplace_back(idle.vm.get(), "idle past its maximum age");
      else if (idle.ping_seq != 0)
        drop.emplace_back(idle.vm.get(), "stopped answering");
      else if (idle.ping_seq = next_ping_++; !idle.vm->ping(idle.ping_seq))
        drop.emplace_back(idle.vm.get(), "cannot reach its agent");
    }
  for (auto& [vm, why] : drop) remove_ready(vm, why);
}

void WarmPool::stop() {
  stopped_ = true;
  if (health_) uv_timer_stop(health_.get());
  if (backoff_) uv_timer_stop(backoff_.get());
  for (auto& lane : lanes_) {
    for (auto& idle : lane.ready) fleet_.release(std::move(idle.vm));
    lane.ready.clear();
    for (auto& [raw, vm] : lane.booting) fleet_.release(std::move(vm));
    lane.booting.clear();
  }
}

std::vector<PoolInfo> WarmPool::stats() const {
  std::vector<PoolInfo> out;
  for (size_t i = 0; i < kLanguageCount; ++i)
    out.push_back({static_cast<Language>(i), options_.size[i], static_cast<uint32_t>(lanes_[i].ready.size()),
                   static_cast<uint32_t>(lanes_[i].booting.size()), lanes_[i].hits, lanes_[i].misses});
  return out;
}

}  // namespace sandbox::daemon
