#include "daemon/manager.h"

#include <algorithm>

#include "common/limits.h"
#include "common/validate.h"
#include "daemon/log.h"
#include "daemon/process.h"
#include "daemon/snapshots.h"

#include <fcntl.h>
#include "daemon/vm.h"

namespace sandbox::daemon {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t ms_between(Clock::time_point a, Clock::time_point b) {
  if (b < a || a == Clock::time_point{}) return 0;
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
}

// After a pool boot fails, refills wait this long: broken images or a
// missing QEMU must not turn into a busy loop of boots.
constexpr std::chrono::milliseconds kRefillBackoff{5'000};

size_t index_of(proto::Language l) { return static_cast<size_t>(l); }

}  // namespace

// One run. States and what moves them:
//   queued    -> booting (capacity or a warm VM) | finished (deadline, cancel)
//   booting   -> executing (agent hello)         | finished (boot failed)
//   executing -> finished (exec done, error, host deadline, cancel)
class Manager::Run {
 public:
  enum class State { queued, booting, executing, finished };

  Run(Manager* m, RunId id, Caller caller, proto::RunRequest req, std::weak_ptr<RunObserver> obs)
      : mgr_(m), id_(id), caller_(caller), req_(std::move(req)), observer_(std::move(obs)), accepted_(Clock::now()) {
    timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(m->loop_, t); });
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
          if (auto* run = owner_of<Run>(t); run && run->state_ == State::queued)
            run->fail(Error::make(ErrorCode::capacity, "no VM slot became free within the queue deadline (" +
                                                           std::to_string(run->mgr_->options_.queue_timeout.count()) +
                                                           " ms); try again later"));
        },
        static_cast<uint64_t>(m->options_.queue_timeout.count()), 0);
  }
  ~Run() {
    if (vm_) mgr_->bury(std::move(vm_));
  }

  State state() const { return state_; }
  const Caller& caller() const { return caller_; }

  // Starts on a warm VM or a fresh boot; false when there is no room yet.
  bool try_start() {
    auto lang = index_of(req_.language);
    bool pool_eligible = mgr_->options_.pool_size[lang] > 0 && req_.memory_mb == mgr_->options_.pool_memory_mb;
    if (pool_eligible) {
      if (auto vm = mgr_->take_warm(req_.language)) {
        ++mgr_->pools_[lang].hits;
        warm_ = true;
        vm_start_ = "pool";
        adopt(std::move(vm));
        return true;
      }
    }
    if (!mgr_->has_capacity() && !mgr_->evict_idle()) return false;
    if (pool_eligible) ++mgr_->pools_[lang].misses;
    uv_timer_stop(timer_.get());
    state_ = State::booting;
    if (auto r = boot(); !r) fail(std::move(r).error());
    return true;
  }

  void cancel() {
    if (state_ == State::finished) return;
    log_info("run " + std::to_string(id_) + " cancelled: caller went away");
    end();
  }

  void fail(Error e) {
    if (state_ == State::finished) return;
    log_info("run id=" + std::to_string(id_) + " uid=" + std::to_string(caller_.uid) + " failed: " +
             e.describe().substr(0, 500));
    auto obs = observer_.lock();
    end();
    if (obs) obs->on_error(proto::ErrorReply{req_.id, e.code, e.message});
  }

 private:
  Vm::Events events() {
    Vm::Events ev;
    ev.ready = [this] { on_ready(); };
    ev.output = [this](proto::Output&& o) { on_output(std::move(o)); };
    ev.done = [this](proto::ExecDone&& d) { on_done(d); };
    ev.exec_error = [this](proto::ErrorReply&& e) { fail(Error::make(e.code, "guest: " + e.message)); };
    ev.failed = [this](Error e) { on_vm_failed(std::move(e)); };
    return ev;
  }

  void adopt(std::unique_ptr<Vm> vm) {
    uv_timer_stop(timer_.get());
    vm_ = std::move(vm);
    vm_->set_events(events());
    spawned_ = ready_ = Clock::now();
    state_ = State::booting;
    on_ready();
  }

  Result<void> boot() {
    ++attempts_;
    VmSpec spec = mgr_->options_.vm;
    spec.memory_mb = req_.memory_mb;
    // Without extra environment the interpreter can come up during boot.
    if (req_.env.empty()) spec.prestart = req_.language;
    std::string how;
    auto vm = mgr_->start_vm(spec, req_.language, events(), &how);
    if (!vm) return std::move(vm).error();
    vm_ = std::move(*vm);
    if (vm_start_.empty()) vm_start_ = how;
    else if (how == "boot") vm_start_ = "boot (snapshot failed)";
    if (attempts_ == 1) spawned_ = Clock::now();
    return ok();
  }

  void on_ready() {
    if (state_ != State::booting) return;
    state_ = State::executing;
    if (ready_ == Clock::time_point{}) ready_ = Clock::now();
    const auto& o = mgr_->options_;
    proto::Exec exec{id_, req_.language, req_.code, req_.env, req_.timeout_ms,
                     static_cast<uint32_t>(o.kill_grace.count()), limits::kMaxStdoutBytes, limits::kMaxStderrBytes,
                     o.pids_max};
    if (auto r = vm_->exec(exec); !r) return fail(std::move(r).error());
    exec_sent_ = Clock::now();
    cpu_at_start_ = usage().cpu_ms;
    // The guest enforces the timeout; this catches a guest that cannot.
    auto deadline = std::chrono::milliseconds(req_.timeout_ms) + o.kill_grace + o.kill_slack;
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
          if (auto* run = owner_of<Run>(t)) run->on_host_deadline();
        },
        static_cast<uint64_t>(deadline.count()), 0);
  }

  void on_output(proto::Output&& o) {
    if (state_ != State::executing) return;
    bool is_out = o.stream == proto::Stream::out;
    std::string& buf = is_out ? stdout_ : stderr_;
    bool& truncated = is_out ? stdout_truncated_ : stderr_truncated_;
    size_t cap = is_out ? limits::kMaxStdoutBytes : limits::kMaxStderrBytes;
    if (buf.size() >= cap) {
      truncated = truncated || !o.data.empty();
      return;
    }
    std::string_view keep(o.data);
    if (buf.size() + keep.size() > cap) {
      keep = keep.substr(0, cap - buf.size());
      truncated = true;
    }
    buf.append(keep);
    if (auto obs = observer_.lock()) obs->on_output(req_.id, o.stream, keep);
  }

  void on_done(const proto::ExecDone& d) {
    if (state_ != State::executing) return;
    proto::RunResult r = base_result();
    r.exit_code = d.exit_code;
    r.signal = d.signal;
    r.timed_out = d.timed_out;
    r.execution_time_ms = d.duration_ms;
    r.stdout_truncated = r.stdout_truncated || d.stdout_truncated;
    r.stderr_truncated = r.stderr_truncated || d.stderr_truncated;
    succeed(std::move(r));
  }

  void on_host_deadline() {
    if (state_ != State::executing) return;
    proto::RunResult r = base_result();
    r.timed_out = true;
    r.signal = 9;
    r.exit_code = 128 + 9;
    r.execution_time_ms = ms_between(exec_sent_, Clock::now());
    log_warning("run " + std::to_string(id_) + ": guest missed its deadline; VM killed");
    succeed(std::move(r));
  }

  void on_vm_failed(Error e) {
    if (state_ == State::finished) return;
    bool booting = state_ == State::booting;
    bool retryable = e.code == ErrorCode::timeout || e.code == ErrorCode::vm_boot_failed;
    if (booting && vm_ && vm_->restored()) {
      // A snapshot that cannot be restored is discarded; this run boots.
      mgr_->discard_snapshot(req_.language, req_.memory_mb, e.message.substr(0, 200));
      mgr_->bury(std::move(vm_));
      --attempts_;
      if (auto r = boot(); !r) fail(std::move(r).error());
      return;
    }
    if (booting && retryable && attempts_ <= mgr_->options_.boot_retries) {
      log_warning("run " + std::to_string(id_) + ": boot attempt " + std::to_string(attempts_) + " failed (" +
                  e.describe().substr(0, 200) + "); retrying");
      mgr_->bury(std::move(vm_));
      if (auto r = boot(); !r) fail(std::move(r).error());
      return;
    }
    if (booting && e.code == ErrorCode::timeout) e.code = ErrorCode::vm_boot_failed;
    fail(std::move(e));
  }

  ProcessUsage usage() const {
    if (!vm_) return {};
    return read_process_usage(vm_->pid()).value_or(ProcessUsage{});
  }

  proto::RunResult base_result() {
    auto now = Clock::now();
    proto::RunResult r;
    r.id = req_.id;
    r.stdout_data = std::move(stdout_);
    r.stderr_data = std::move(stderr_);
    r.stdout_truncated = stdout_truncated_;
    r.stderr_truncated = stderr_truncated_;
    r.timing.setup_ms = ms_between(accepted_, spawned_);
    r.timing.boot_ms = ms_between(spawned_, ready_);
    r.timing.execute_ms = ms_between(exec_sent_, now);
    r.timing.total_ms = ms_between(accepted_, now);
    // Measured on the host, for the QEMU process while the code ran.
    auto u = usage();
    r.cpu_time_ms = u.cpu_ms > cpu_at_start_ ? u.cpu_ms - cpu_at_start_ : 0;
    r.memory_peak_mb = (u.peak_rss_kb + 1023) / 1024;
    r.warm_pool_hit = warm_;
    r.accelerator = std::string(accel_name(mgr_->options_.vm.accel));
    r.vm_start = vm_start_;
    return r;
  }

  void succeed(proto::RunResult r) {
    if (state_ == State::finished) return;
    log_info("run id=" + std::to_string(id_) + " uid=" + std::to_string(caller_.uid) + " language=" +
             std::string(proto::language_name(req_.language)) + " exit=" + std::to_string(r.exit_code) +
             " timed_out=" + (r.timed_out ? "1" : "0") + " warm=" + (warm_ ? "1" : "0") +
             " boot_ms=" + std::to_string(r.timing.boot_ms) + " total_ms=" + std::to_string(r.timing.total_ms) +
             " accel=" + r.accelerator);
    auto obs = observer_.lock();
    end();
    if (obs) obs->on_result(std::move(r));
  }

  void end() {
    state_ = State::finished;
    if (timer_) uv_timer_stop(timer_.get());
    if (vm_) mgr_->bury(std::move(vm_));
    mgr_->finished(id_);
  }

  Manager* mgr_;
  RunId id_;
  Caller caller_;
  proto::RunRequest req_;
  std::weak_ptr<RunObserver> observer_;
  State state_ = State::queued;
  std::unique_ptr<Vm> vm_;
  UvHandle<uv_timer_t> timer_;  // queue deadline, then host deadline
  uint32_t attempts_ = 0;
  bool warm_ = false;
  std::string vm_start_;
  std::string stdout_, stderr_;
  bool stdout_truncated_ = false, stderr_truncated_ = false;
  Clock::time_point accepted_, spawned_, ready_, exec_sent_;
  uint64_t cpu_at_start_ = 0;
};

Manager::Manager(uv_loop_t* loop, ManagerOptions options) : loop_(loop), options_(std::move(options)) {
  auto timer = [&] { return UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); }); };
  sweep_ = timer();
  health_ = timer();
  retry_refill_ = timer();
  drain_timer_ = timer();
}

Manager::~Manager() {
  cancel_all();
  for (auto& [key, t] : templates_) {
    t.vm.reset();
    options_.snapshots->abort(std::move(*t.pending));
  }
  templates_.clear();
  for (auto& pool : pools_) {
    pool.ready.clear();
    pool.booting.clear();
  }
  dead_runs_.clear();
  dead_vms_.clear();
}

void Manager::start() {
  auto interval = static_cast<uint64_t>(options_.pool_health_interval.count());
  uv_timer_start(
      health_.get(),
      [](uv_timer_t* t) {
        if (auto* m = owner_of<Manager>(t)) m->health_tick();
      },
      interval, interval);
  refill();
}

Result<Manager::RunId> Manager::run(const Caller& caller, proto::RunRequest request,
                                    std::weak_ptr<RunObserver> observer) {
  if (auto v = validate_run_request(request); !v) return std::move(v).error();
  if (draining_) return Error::make(ErrorCode::capacity, "sandboxd is shutting down");
  if (auto u = per_uid_.find(caller.uid); u != per_uid_.end() && u->second >= options_.max_runs_per_uid)
    return Error::make(ErrorCode::capacity, "uid " + std::to_string(caller.uid) + " already has " +
                                                std::to_string(u->second) + " runs in flight (the per-user limit)");
  RunId id = next_id_++;
  ++per_uid_[caller.uid];
  runs_.emplace(id, std::make_unique<Run>(this, id, caller, std::move(request), std::move(observer)));
  queue_.push_back(id);
  // Admission happens on the next loop turn, never inside this call, so a
  // transport hears about the run only after it has recorded it.
  schedule_sweep();
  return id;
}

void Manager::cancel(RunId id) {
  if (auto it = runs_.find(id); it != runs_.end()) it->second->cancel();
}

void Manager::cancel_all() {
  std::vector<RunId> ids;
  for (auto& [id, run] : runs_) ids.push_back(id);
  for (auto id : ids) cancel(id);
}

void Manager::drain(std::chrono::milliseconds grace, std::function<void()> done) {
  draining_ = true;
  drained_ = std::move(done);
  uv_timer_stop(health_.get());
  uv_timer_stop(retry_refill_.get());
  for (auto& [key, t] : templates_) {
    bury(std::move(t.vm));
    options_.snapshots->abort(std::move(*t.pending));
  }
  templates_.clear();
  for (auto& pool : pools_) {
    while (!pool.ready.empty()) {
      bury(std::move(pool.ready.front().vm));
      pool.ready.pop_front();
    }
    for (auto& [raw, vm] : pool.booting) bury(std::move(vm));
    pool.booting.clear();
  }
  for (RunId id : std::deque<RunId>(queue_))
    if (auto it = runs_.find(id); it != runs_.end())
      it->second->fail(Error::make(ErrorCode::capacity, "sandboxd is shutting down"));
  uv_timer_start(
      drain_timer_.get(),
      [](uv_timer_t* t) {
        auto* m = owner_of<Manager>(t);
        if (!m) return;
        if (!m->runs_.empty())
          log_warning("shutdown grace over; cancelling " + std::to_string(m->runs_.size()) + " runs");
        m->cancel_all();
      },
      static_cast<uint64_t>(grace.count()), 0);
  schedule_sweep();
}

proto::Status Manager::status() const {
  proto::Status s;
  s.version = options_.version;
  s.accelerator = std::string(accel_name(options_.vm.accel));
  s.accelerator_reason = options_.accel_reason;
  s.vms = live_vms_;
  s.max_vms = options_.max_vms;
  for (const auto& [id, run] : runs_) {
    if (run->state() == Run::State::queued) ++s.runs_queued;
    else if (run->state() != Run::State::finished) ++s.runs_active;
  }
  for (size_t i = 0; i < kLanguageCount; ++i) {
    proto::PoolStats p;
    p.language = static_cast<proto::Language>(i);
    p.target = options_.pool_size[i];
    p.ready = static_cast<uint32_t>(pools_[i].ready.size());
    p.booting = static_cast<uint32_t>(pools_[i].booting.size());
    p.hits = pools_[i].hits;
    p.misses = pools_[i].misses;
    s.pool.push_back(p);
  }
  return s;
}

std::vector<proto::SnapshotInfo> Manager::snapshots(bool drop) {
  std::vector<proto::SnapshotInfo> out;
  if (!options_.snapshots) return out;
  auto entries = options_.snapshots->list();
  if (drop) {
    for (const auto& e : entries) options_.snapshots->drop(e.key);
    log_info("snapshot cache emptied (" + std::to_string(entries.size()) + " snapshots)");
    entries.clear();
  }
  for (const auto& e : entries) out.push_back({e.key, e.language, e.memory_mb, e.bytes});
  return out;
}

Result<std::unique_ptr<Vm>> Manager::start_vm(VmSpec spec, proto::Language language, Vm::Events events,
                                              std::string* how, bool allow_restore) {
  *how = "boot";
  if (options_.snapshots && allow_restore) {
    if (auto entry = options_.snapshots->find(options_.snapshots->key(language, spec.memory_mb))) {
      unique_fd state(::open(entry->state.c_str(), O_RDONLY | O_CLOEXEC));
      if (state) {
        VmSpec restore = spec;
        restore.incoming = true;
        restore.memory_file = entry->ram;
        restore.memory_shared = false;
        auto vm = Vm::start(loop_, std::move(restore), options_.boot_timeout, events, state.get());
        if (vm) {
          ++live_vms_;
          *how = "snapshot";
          return vm;
        }
        log_warning("snapshot restore could not start: " + vm.error().describe());
      }
      discard_snapshot(language, spec.memory_mb, "its files could not be used");
    }
  }
  auto vm = Vm::start(loop_, spec, options_.boot_timeout, std::move(events));
  if (!vm) return std::move(vm).error();
  ++live_vms_;
  maybe_create_snapshot(language, spec.memory_mb);
  return vm;
}

void Manager::discard_snapshot(proto::Language language, uint32_t memory_mb, const std::string& why) {
  if (!options_.snapshots) return;
  log_warning("snapshot for " + std::string(proto::language_name(language)) + "/" + std::to_string(memory_mb) +
              " MB discarded: " + why);
  options_.snapshots->drop(options_.snapshots->key(language, memory_mb));
}

void Manager::maybe_create_snapshot(proto::Language language, uint32_t memory_mb) {
  auto* store = options_.snapshots;
  if (!store || draining_ || !has_capacity()) return;
  std::string key = store->key(language, memory_mb);
  if (templates_.count(key) || store->find(key)) return;
  auto pending = store->begin(language, memory_mb);
  if (!pending) {
    log_warning("cannot start a snapshot: " + pending.error().describe());
    return;
  }
  // A template VM: booted with its RAM in the snapshot's file, saved once
  // its interpreter waits, then destroyed. It never runs user code.
  VmSpec spec = options_.vm;
  spec.memory_mb = memory_mb;
  spec.prestart = language;
  spec.memory_file = pending->ram;
  spec.memory_shared = true;
  auto shared = std::make_shared<SnapshotStore::Pending>(std::move(*pending));
  Vm::Events ev;
  ev.ready = [this, key, shared] {
    auto it = templates_.find(key);
    if (it == templates_.end()) return;
    it->second.vm->snapshot([this, key, shared](Result<void> r) {
      auto t = templates_.find(key);
      if (t == templates_.end()) return;
      if (r) {
        auto entry = options_.snapshots->commit(std::move(*shared));
        if (entry)
          log_info("snapshot ready: " + std::string(proto::language_name(entry->language)) + "/" +
                   std::to_string(entry->memory_mb) + " MB, " + std::to_string(entry->bytes >> 20) + " MB on disk");
        else
          log_warning("cannot store a snapshot: " + entry.error().describe());
      } else {
        log_warning("snapshot failed: " + r.error().describe());
        options_.snapshots->abort(std::move(*shared));
      }
      bury(std::move(t->second.vm));
      templates_.erase(t);
    });
  };
  ev.failed = [this, key, shared](Error e) {
    auto t = templates_.find(key);
    if (t == templates_.end()) return;
    log_warning("snapshot template failed: " + e.describe().substr(0, 300));
    options_.snapshots->abort(std::move(*shared));
    bury(std::move(t->second.vm));
    templates_.erase(t);
  };
  auto vm = Vm::start(loop_, spec, options_.boot_timeout, std::move(ev), shared->state.get());
  if (!vm) {
    log_warning("cannot start a snapshot template: " + vm.error().describe());
    store->abort(std::move(*shared));
    return;
  }
  ++live_vms_;
  templates_.emplace(key, Template{std::move(*vm), shared});
}

Result<std::unique_ptr<Vm>> Manager::boot_vm(VmSpec spec, proto::Language language, std::function<void(Vm*)> on_ready,
                                             std::function<void(Vm*, Error)> on_failed) {
  // The Vm does not exist yet when the handlers are made; they find it
  // through this cell.
  auto self = std::make_shared<Vm*>(nullptr);
  Vm::Events ev;
  ev.ready = [self, on_ready] { on_ready(*self); };
  ev.failed = [self, on_failed](Error e) { on_failed(*self, std::move(e)); };
  std::string how;
  auto vm = start_vm(std::move(spec), language, std::move(ev), &how, options_.pool_restore);
  if (!vm) return std::move(vm).error();
  *self = vm->get();
  return vm;
}

void Manager::bury(std::unique_ptr<Vm> vm) {
  if (!vm) return;
  if (live_vms_ > 0) --live_vms_;
  dead_vms_.push_back(std::move(vm));
  schedule_sweep();
}

bool Manager::evict_idle() {
  // Oldest ready VM of any language first, then a booting one.
  Pool* oldest = nullptr;
  for (auto& pool : pools_)
    if (!pool.ready.empty() && (!oldest || pool.ready.front().since < oldest->ready.front().since)) oldest = &pool;
  if (oldest) {
    bury(std::move(oldest->ready.front().vm));
    oldest->ready.pop_front();
    return true;
  }
  for (auto& pool : pools_)
    if (!pool.booting.empty()) {
      bury(std::move(pool.booting.begin()->second));
      pool.booting.erase(pool.booting.begin());
      return true;
    }
  return false;
}

std::unique_ptr<Vm> Manager::take_warm(proto::Language language) {
  auto& ready = pools_[index_of(language)].ready;
  while (!ready.empty()) {
    auto vm = std::move(ready.front().vm);
    ready.pop_front();
    if (vm->state() == Vm::State::ready) {
      schedule_sweep();  // refill behind it
      return vm;
    }
    bury(std::move(vm));
  }
  return nullptr;
}

void Manager::refill() {
  if (draining_ || !queue_.empty() || uv_is_active(reinterpret_cast<uv_handle_t*>(retry_refill_.get()))) return;
  for (;;) {
    uint32_t booting = 0;
    for (auto& pool : pools_) booting += static_cast<uint32_t>(pool.booting.size());
    if (booting >= options_.pool_refill_concurrency || !has_capacity()) return;
    // The language furthest below its target goes first.
    size_t best = kLanguageCount;
    int64_t best_gap = 0;
    for (size_t i = 0; i < kLanguageCount; ++i) {
      int64_t gap = int64_t{options_.pool_size[i]} - int64_t(pools_[i].ready.size() + pools_[i].booting.size());
      if (gap > best_gap) best = i, best_gap = gap;
    }
    if (best == kLanguageCount) return;
    auto language = static_cast<proto::Language>(best);
    VmSpec spec = options_.vm;
    spec.memory_mb = options_.pool_memory_mb;
    spec.prestart = language;
    // Pool VMs wait for callers anyway: under TCG, spend that time warming
    // the translation cache of a restored VM rather than the first run.
    spec.warm_up = spec.accel == Accel::tcg;
    auto vm = boot_vm(
        spec, language, [this, language](Vm* vm) { on_pool_ready(language, vm); },
        [this, language](Vm* vm, Error e) { on_pool_failed(language, vm, std::move(e)); });
    if (!vm) {
      log_error("warm pool: cannot start a VM: " + vm.error().describe());
      uv_timer_start(retry_refill_.get(), [](uv_timer_t* t) {
        if (auto* m = owner_of<Manager>(t)) m->refill();
      }, static_cast<uint64_t>(kRefillBackoff.count()), 0);
      return;
    }
    Vm* raw = vm->get();
    pools_[best].booting.emplace(raw, std::move(*vm));
  }
}

void Manager::on_pool_ready(proto::Language language, Vm* vm) {
  auto& pool = pools_[index_of(language)];
  auto it = pool.booting.find(vm);
  if (it == pool.booting.end()) return;
  auto owned = std::move(it->second);
  pool.booting.erase(it);
  if (owned->prestarted() != language)
    log_warning("warm pool: a " + std::string(proto::language_name(language)) +
                " VM came up without its interpreter; runs on it start one");
  Vm::Events ev;
  ev.failed = [this, vm](Error e) { remove_idle(vm, e.message.substr(0, 200)); };
  ev.pong = [this, vm](uint64_t seq) {
    for (auto& pool : pools_)
      for (auto& idle : pool.ready)
        if (idle.vm.get() == vm && idle.ping_seq == seq) idle.ping_seq = 0;
  };
  owned->set_events(std::move(ev));
  pool.ready.push_back(Idle{std::move(owned), Clock::now(), 0});
  log_debug("warm pool: " + std::string(proto::language_name(language)) + " VM ready in " +
            std::to_string(ms_between(vm->started_at(), vm->ready_at())) + " ms");
  schedule_sweep();
}

void Manager::on_pool_failed(proto::Language language, Vm* vm, Error e) {
  auto& pool = pools_[index_of(language)];
  auto it = pool.booting.find(vm);
  if (it == pool.booting.end()) return;
  log_warning("warm pool: " + std::string(proto::language_name(language)) + " VM failed to boot: " +
              e.describe().substr(0, 300));
  if (it->second->restored()) discard_snapshot(language, options_.pool_memory_mb, "restore failed");
  bury(std::move(it->second));
  pool.booting.erase(it);
  uv_timer_start(retry_refill_.get(), [](uv_timer_t* t) {
    if (auto* m = owner_of<Manager>(t)) m->refill();
  }, static_cast<uint64_t>(kRefillBackoff.count()), 0);
}

void Manager::remove_idle(Vm* vm, const std::string& why) {
  for (auto& pool : pools_)
    for (auto it = pool.ready.begin(); it != pool.ready.end(); ++it)
      if (it->vm.get() == vm) {
        log_info("warm pool: replacing a VM: " + why);
        bury(std::move(it->vm));
        pool.ready.erase(it);
        return;
      }
}

void Manager::health_tick() {
  auto now = Clock::now();
  std::vector<std::pair<Vm*, std::string>> drop;
  for (auto& pool : pools_)
    for (auto& idle : pool.ready) {
      if (now - idle.since > options_.pool_max_idle)
        drop.emplace_back(idle.vm.get(), "idle past its maximum age");
      else if (idle.ping_seq != 0)
        drop.emplace_back(idle.vm.get(), "stopped answering");
      else if (idle.ping_seq = next_ping_++; !idle.vm->ping(idle.ping_seq))
        drop.emplace_back(idle.vm.get(), "cannot reach its agent");
    }
  for (auto& [vm, why] : drop) remove_idle(vm, why);
}

void Manager::admit() {
  while (!queue_.empty()) {
    auto it = runs_.find(queue_.front());
    if (it == runs_.end() || it->second->state() != Run::State::queued) {
      queue_.pop_front();
      continue;
    }
    if (!it->second->try_start()) return;
    queue_.pop_front();
  }
}

void Manager::finished(RunId id) {
  if (auto it = runs_.find(id); it != runs_.end()) {
    if (auto u = per_uid_.find(it->second->caller().uid); u != per_uid_.end() && --u->second == 0) per_uid_.erase(u);
    dead_runs_.push_back(std::move(it->second));
    runs_.erase(it);
  }
  std::erase(queue_, id);
  schedule_sweep();
}

void Manager::schedule_sweep() {
  if (!sweep_) return;
  uv_timer_start(
      sweep_.get(),
      [](uv_timer_t* t) {
        auto* m = owner_of<Manager>(t);
        if (!m) return;
        m->dead_runs_.clear();
        m->dead_vms_.clear();
        m->admit();
        m->refill();
        m->maybe_drained();
      },
      0, 0);
}

void Manager::maybe_drained() {
  if (!draining_ || !runs_.empty() || !drained_) return;
  uv_timer_stop(drain_timer_.get());
  auto done = std::move(drained_);
  drained_ = nullptr;
  done();
}

}  // namespace sandbox::daemon
