#include "daemon/pool.h"

#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

std::string lane_name(Language language, const std::shared_ptr<LayerGrant>& layer) {
  return std::string(language_name(language)) + (layer ? " (layer " + layer->use().key + ")" : "");
}

}  // namespace

WarmPool::WarmPool(uv_loop_t* loop, Fleet& fleet, SnapshotFlow& snapshots, PoolOptions options,
                   std::function<bool()> may_refill)
    : fleet_(fleet), snapshots_(snapshots), options_(options), may_refill_(std::move(may_refill)), later_(loop) {
  auto timer = [&] { return UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); }); };
  health_ = timer();
  backoff_ = timer();
  for (size_t i = 0; i < kLanguageCount; ++i) {
    lanes_.emplace_back();
    lanes_.back().language = static_cast<Language>(i);
    lanes_.back().target = options_.size[i];
  }
}

void WarmPool::add_layer_lane(Language language, uint32_t count, std::shared_ptr<LayerGrant> layer) {
  Lane lane;
  lane.language = language;
  lane.target = count;
  lane.layer = std::move(layer);
  lanes_.push_back(std::move(lane));
  refill();
}

WarmPool::Lane* WarmPool::lane(Language language, const std::string& layer) {
  for (auto& l : lanes_)
    if (l.language == language && (l.layer ? l.layer->identity() == layer : layer.empty())) return &l;
  return nullptr;
}

const WarmPool::Lane* WarmPool::lane(Language language, const std::string& layer) const {
  return const_cast<WarmPool*>(this)->lane(language, layer);
}

WarmPool::~WarmPool() { stop(); }

void WarmPool::start() {
  auto every = static_cast<uint64_t>(options_.health_interval.count());
  uv_timer_start(health_.get(), [](uv_timer_t* t) {
    if (auto* p = owner_of<WarmPool>(t)) p->health_tick();
  }, every, every);
  refill();
}

bool WarmPool::eligible(Language language, uint32_t memory_mb, const std::string& layer) const {
  const Lane* l = lane(language, layer);
  return l && l->target > 0 && memory_mb == options_.memory_mb;
}

std::unique_ptr<VmHandle> WarmPool::take(Language language, const std::string& layer) {
  Lane* l = lane(language, layer);
  if (!l) return nullptr;
  auto& ready = l->ready;
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

void WarmPool::count(Language language, bool hit, const std::string& layer) {
  if (Lane* l = lane(language, layer)) ++(hit ? l->hits : l->misses);
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
    // The lane furthest below its target goes first.
    size_t best = lanes_.size();
    int64_t best_gap = 0;
    for (size_t i = 0; i < lanes_.size(); ++i) {
      int64_t gap = int64_t{lanes_[i].target} - int64_t(lanes_[i].ready.size() + lanes_[i].booting.size());
      if (gap > best_gap) best = i, best_gap = gap;
    }
    if (best == lanes_.size()) return;
    auto language = lanes_[best].language;
    // The handlers find their VM through this cell: it does not exist yet.
    auto self = std::make_shared<VmHandle*>(nullptr);
    auto restored = std::make_shared<bool>(false);
    VmEvents ev;
    ev.ready = [this, best, self] { on_ready(best, *self); };
    ev.failed = [this, best, self, restored](Error e) { on_boot_failed(best, *self, *restored, e); };
    std::string how;
    // Pool VMs wait for callers anyway: under TCG, a restored VM spends that
    // time warming its translation cache rather than the first run's.
    VmShape shape{options_.memory_mb, language, options_.warm_up};
    // A layer's lane: the image its grant verified, whatever the cache
    // holds under that path since.
    std::optional<SnapshotLayer> layer;
    if (const auto& grant = lanes_[best].layer) {
      shape.layer_fd = grant->fd();
      shape.layer = language;
      layer = SnapshotLayer{grant->identity(), grant->fd(), language};
    }
    auto vm = fleet_.start(snapshots_.plan(shape, language, options_.restore, &how, layer ? &*layer : nullptr),
                           std::move(ev));
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

void WarmPool::on_ready(size_t index, VmHandle* vm) {
  auto& lane = lanes_[index];
  auto language = lane.language;
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
  log_debug("warm pool: " + lane_name(language, lane.layer) + " VM ready in " + std::to_string(took.count()) + " ms");
  lane.ready.push_back(Idle{std::move(owned), std::chrono::steady_clock::now(), 0});
  later_.post([this] { refill(); });
}

void WarmPool::on_boot_failed(size_t index, VmHandle* vm, bool restored, const Error& e) {
  auto& lane = lanes_[index];
  auto it = lane.booting.find(vm);
  if (it == lane.booting.end()) return;
  ++boot_failures_;
  log_warning("warm pool: " + lane_name(lane.language, lane.layer) + " VM failed to boot: " + e.describe().substr(0, 300));
  if (restored)
    snapshots_.restore_failed(lane.language, options_.memory_mb, e, lane.layer ? lane.layer->identity() : std::string());
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
  for (const auto& l : lanes_)
    out.push_back({l.language, l.target, static_cast<uint32_t>(l.ready.size()), static_cast<uint32_t>(l.booting.size()),
                   l.hits, l.misses, l.layer ? l.layer->use().key : std::string()});
  return out;
}

}  // namespace sandbox::daemon
