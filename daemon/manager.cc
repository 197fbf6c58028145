#include "daemon/manager.h"

#include <fcntl.h>

#include <algorithm>

#include "common/packages.h"
#include "common/unique_fd.h"
#include "daemon/log.h"

namespace sandbox::daemon {

Manager::Manager(uv_loop_t* loop, VmFactory& factory, SnapshotStore* snapshots, ManagerOptions options)
    : loop_(loop),
      options_(std::move(options)),
      fleet_(loop, factory, options_.max_vms),
      snapshot_flow_(loop, fleet_, snapshots),
      pool_(loop, fleet_, snapshot_flow_, options_.pool, [this] { return !draining_ && scheduler_.queued() == 0; }),
      scheduler_(options_.limits),
      later_(loop) {
  drain_timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); });
  if (!options_.sessions_journal.empty())
    if (size_t n = sessions_.open_journal(options_.sessions_journal))
      log_info(std::to_string(n) + " sessions of an earlier sandboxd are gone; their callers get session_closed");
  if (options_.snapshot_remote && snapshot_flow_.enabled()) snapshot_flow_.set_remote(options_.snapshot_remote(loop));
  if (options_.layer_store) {
    builder_ = std::make_unique<Builder>(loop, fleet_, [this] { return make_room(); }, options_.builder);
    layers_ = std::make_unique<LayerCache>(
        loop, options_.layer_store, [this](const LayerKeyInputs& in, const std::string& path, Builder::Done done) {
          builder_->build(in, path, std::move(done));
        },
        options_.layer_remote ? options_.layer_remote(loop) : nullptr);
  }
}

Result<std::vector<LayerInfo>> Manager::layers(const std::string& drop, bool drop_all) {
  if (!layers_) {
    if (!drop.empty()) return Error::make(ErrorCode::not_found, "no layer '" + drop + "'");
    return std::vector<LayerInfo>{};
  }
  return layers_->list(drop, drop_all);
}

void Manager::admit_with_layer(LeaseId id, Language language, const std::vector<std::string>& packages) {
  if (packages.empty() || !layers_) {
    scheduler_.enqueue(id);
    return poke();
  }
  auto in = layer_inputs(language, packages);
  // The answer comes from a later loop turn (a hit once its image is
  // checked, or a build); the lease may have gone meanwhile (its caller
  // left). A build has its own time limit: the lease waits for a VM slot
  // only after it.
  if (Lease* lease = find(id)) lease->pause_queue_clock();
  layers_->get(in, [this, id](Result<std::shared_ptr<LayerGrant>> grant) {
    Lease* lease = find(id);
    if (!lease) return;
    if (!grant) return lease->fail(std::move(grant).error());
    lease->set_layer(std::move(*grant));
    scheduler_.enqueue(id);
    poke();
  });
}

LayerKeyInputs Manager::layer_inputs(Language language, const std::vector<std::string>& packages) const {
  const auto& f = options_.layer_facts;
  LayerKeyInputs in;
  in.language = language;
  in.packages = packages;
  in.base_image = f.base_image;
  in.interpreter = language == Language::javascript ? f.node : f.python;
  in.installer = language == Language::javascript ? f.npm : f.pip;
  in.index_url = language == Language::javascript ? f.npm_registry_url : f.python_index_url;
  in.source_builds = language == Language::javascript ? f.install_scripts : f.source_builds;
  if (std::any_of(packages.begin(), packages.end(), [](const auto& p) { return is_apt_package(p); })) {
    in.apt_sources = f.apt_sources;
    in.apt_installer = f.apt;
  }
  return in;
}

Manager::~Manager() {
  // Leases first (their VMs go back to the fleet), then the pool and the
  // templates, then whatever waits to be destroyed.
  draining_ = true;
  sessions_.freeze_journal();
  auto leases = std::exchange(leases_, {});
  for (auto& [id, lease] : leases) lease->cancel();
  leases.clear();
  pool_.stop();
  snapshot_flow_.stop();
  layers_.reset();
  builder_.reset();
  later_.run();
  fleet_.flush();
}

void Manager::start() {
  pool_.start();
  if (!layers_) return;
  // Each set's layer, built now if the cache lacks it; its lane fills once
  // it is there. A set that cannot be built is logged and left out.
  for (const auto& set : options_.pool_layers)
    layers_->get(layer_inputs(set.language, set.packages), [this, set](Result<std::shared_ptr<LayerGrant>> grant) {
      std::string what = std::string(language_name(set.language)) + " layer for";
      for (const auto& p : set.packages) what += " " + p;
      if (!grant) return log_warning("warm pool: no " + what + ": " + grant.error().describe());
      log_info("warm pool: " + std::to_string(set.count) + " warm VMs with the " + what);
      pool_.add_layer_lane(set.language, set.count, std::move(*grant));
    });
}

Lease* Manager::find(LeaseId id) {
  auto it = leases_.find(id);
  return it == leases_.end() ? nullptr : it->second.get();
}

Result<LeaseId> Manager::run(const Caller& caller, uint64_t request_id, RunRequest request, std::weak_ptr<Sink> sink) {
  if (draining_) return Error::make(ErrorCode::capacity, keep_sessions_ ? "sandboxd is draining" : "sandboxd is shutting down");
  if (auto r = scheduler_.reserve(caller.uid, Scheduler::Kind::run); !r) return std::move(r).error();
  LeaseId id = next_id_++;
  auto net = make_policy(request.net);
  if (!net) {
    scheduler_.release(caller.uid, Scheduler::Kind::run);
    return std::move(net).error();
  }
  net->owner_uid = caller.uid;
  LeaseSpec spec{request.language, request.env, request.timeout, request.memory_mb, {}, "", std::move(*net),
                 request.net.allowed_domains};
  auto lease = std::make_unique<Lease>(static_cast<LeaseHost&>(*this), loop_, id, caller, std::move(spec), request_id, sink);
  auto packages = request.packages;
  auto language = request.language;
  Job job;
  job.request_id = request_id;
  job.request = proto::Run{request_id, std::move(request)};
  job.sink = std::move(sink);
  lease->enqueue(std::move(job));
  leases_.emplace(id, std::move(lease));
  // Admission happens on a later loop turn, never inside this call, so the
  // caller records the lease before anything about it arrives.
  later_.post([this, id, language, packages] {
    if (find(id)) admit_with_layer(id, language, packages);
  });
  return id;
}

Result<LeaseId> Manager::open_session(const Caller& caller, uint64_t request_id, SessionOptions options,
                                      std::weak_ptr<Sink> sink) {
  if (draining_) return Error::make(ErrorCode::capacity, keep_sessions_ ? "sandboxd is draining" : "sandboxd is shutting down");
  auto sid = SessionRegistry::new_id();
  if (!sid) return std::move(sid).error();
  if (auto r = scheduler_.reserve(caller.uid, Scheduler::Kind::session); !r) return std::move(r).error();
  LeaseId id = next_id_++;
  auto net = make_policy(options.net);
  if (!net) {
    scheduler_.release(caller.uid, Scheduler::Kind::session);
    return std::move(net).error();
  }
  net->owner_uid = caller.uid;
  LeaseSpec spec{options.language, std::move(options.env), options.timeout, options.memory_mb, options.idle_timeout,
                 *sid, std::move(*net), options.net.allowed_domains};
  leases_.emplace(id, std::make_unique<Lease>(static_cast<LeaseHost&>(*this), loop_, id, caller, std::move(spec), request_id, std::move(sink)));
  sessions_.add(*sid, id, caller.uid);
  later_.post([this, id, language = options.language, packages = options.packages] {
    if (find(id)) admit_with_layer(id, language, packages);
  });
  return id;
}

Result<void> Manager::submit(const Caller& caller, const std::string& session, Job job) {
  auto id = sessions_.find(session, caller.uid);
  if (!id) return std::move(id).error();
  Lease* lease = find(*id);
  if (!lease || lease->state() == Lease::State::finished)
    return Error::make(ErrorCode::session_closed, "session '" + session + "' is closed");
  if (lease->pending_jobs() >= options_.max_session_jobs)
    return Error::make(ErrorCode::capacity, "session '" + session + "' already has " +
                                                std::to_string(options_.max_session_jobs) + " requests waiting");
  lease->enqueue(std::move(job));
  return ok();
}

void Manager::cancel(LeaseId id) {
  if (Lease* lease = find(id)) lease->cancel();
}

void Manager::cancel_job(const std::string& session, uint64_t token) {
  for (auto& [id, lease] : leases_)
    if (lease->spec().session == session) return lease->cancel_job(token);
}

std::vector<SessionInfo> Manager::sessions(const Caller& caller) const {
  std::vector<SessionInfo> out;
  for (LeaseId id : sessions_.of(caller.uid))
    if (auto it = leases_.find(id); it != leases_.end() && it->second->state() != Lease::State::queued &&
                                    it->second->state() != Lease::State::starting)
      out.push_back(it->second->info());
  return out;
}

DaemonStatus Manager::status() const {
  DaemonStatus s;
  s.version = options_.version;
  s.accelerator = options_.lease.accelerator;
  s.accelerator_reason = options_.accel_reason;
  s.host_limits = options_.host_limits;
  s.vms = fleet_.live();
  s.max_vms = fleet_.max();
  s.runs_per_uid = options_.limits.runs_per_uid;
  s.draining = draining_;
  for (const auto& [id, lease] : leases_) {
    if (lease->is_session()) ++s.sessions;
    else if (lease->state() == Lease::State::queued) ++s.runs_queued;
    else if (lease->state() != Lease::State::finished) ++s.runs_active;
  }
  s.pool = pool_.stats();
  return s;
}

std::string Manager::metrics_text() {
  MetricsGauges g;
  g.status = status();
  for (const auto& [id, lease] : leases_)
    if (lease->state() != Lease::State::queued && lease->state() != Lease::State::finished) ++g.vms_leased;
  g.memory_committed_mb = fleet_.memory_mb();
  for (const auto& s : snapshot_flow_.list(false)) g.snapshot_cache_bytes += s.bytes;
  g.snapshot_restores = snapshot_flow_.restores();
  g.snapshot_fallbacks = snapshot_flow_.fallbacks();
  g.snapshot_share = snapshot_flow_.share_stats();
  g.pool_boot_failures = pool_.boot_failures();
  if (layers_) g.layers = layers_->stats();
  return metrics_.render(g);
}

void Manager::poke() {
  if (pump_posted_) return;
  pump_posted_ = true;
  later_.post([this] {
    pump_posted_ = false;
    pump();
  });
}

void Manager::pump() {
  scheduler_.pump([this](LeaseId id) {
    Lease* lease = find(id);
    return !lease || lease->try_start();
  });
  std::vector<Lease*> idle;
  for (auto& [id, lease] : leases_)
    if (lease->state() == Lease::State::idle) idle.push_back(lease.get());
  for (Lease* lease : idle) lease->pump();
  pool_.refill();
  maybe_drained();
}

std::unique_ptr<VmHandle> Manager::take_warm(const LeaseSpec& spec) {
  // A run with a layer is served only by a lane with that very layer.
  std::string layer = spec.layer ? spec.layer->identity() : std::string();
  if (!pool_.eligible(spec.language, spec.memory_mb, layer)) return nullptr;
  auto vm = pool_.take(spec.language, layer);
  if (vm) pool_.count(spec.language, true, layer);
  return vm;
}

void Manager::cold_start(const LeaseSpec& spec) {
  std::string layer = spec.layer ? spec.layer->identity() : std::string();
  if (pool_.eligible(spec.language, spec.memory_mb, layer)) pool_.count(spec.language, false, layer);
}

bool Manager::make_room() { return fleet_.has_room() || pool_.evict_one(); }

Result<std::unique_ptr<VmHandle>> Manager::start_vm(const LeaseSpec& spec, VmEvents events, bool allow_restore,
                                                    std::string* how) {
  VmShape shape;
  shape.memory_mb = spec.memory_mb;
  // Without extra environment the interpreter can come up during boot.
  if (spec.env.empty()) shape.prestart = spec.language;
  std::optional<SnapshotLayer> snapshot_layer;
  if (spec.layer) {
    // The image as checked at grant; QEMU gets the descriptor, never the path.
    shape.layer_fd = spec.layer->fd();
    shape.layer = spec.language;
    // Restored from a snapshot of a VM with this very image, if there is one.
    snapshot_layer = SnapshotLayer{spec.layer->identity(), spec.layer->fd(), spec.language};
  }
  return fleet_.start(
      snapshot_flow_.plan(shape, spec.language, allow_restore, how, snapshot_layer ? &*snapshot_layer : nullptr),
      std::move(events));
}

void Manager::restore_failed(const LeaseSpec& spec, const Error& e) {
  snapshot_flow_.restore_failed(spec.language, spec.memory_mb, e, spec.layer ? spec.layer->identity() : std::string());
}

void Manager::release_vm(std::unique_ptr<VmHandle> vm) {
  fleet_.release(std::move(vm));
  poke();  // room for a queued lease or a refill
}

void Manager::lease_ended(Lease& lease) {
  auto it = leases_.find(lease.id());
  if (it == leases_.end()) return;
  scheduler_.release(lease.caller().uid, lease.is_session() ? Scheduler::Kind::session : Scheduler::Kind::run);
  scheduler_.remove(lease.id());
  if (lease.is_session())
    sessions_.closed(lease.spec().session, lease.closed_reason().empty() ? "closed" : lease.closed_reason());
  // Destroyed on a later loop turn: we are inside one of its own calls.
  std::shared_ptr<Lease> dead(std::move(it->second));
  leases_.erase(it);
  later_.post([dead]() mutable { dead.reset(); });
  poke();
}

void Manager::drain_for_rollout(std::chrono::milliseconds deadline) {
  if (draining_) return;
  log_info("draining: no new runs or sessions; open ones have " + std::to_string(deadline.count() / 1000) + " s");
  keep_sessions_ = true;
  draining_ = true;
  drained_ = [] { log_info("drained: no runs or sessions left"); };
  pool_.stop();
  snapshot_flow_.stop();
  std::vector<Lease*> queued;
  for (auto& [id, lease] : leases_)
    if (lease->state() == Lease::State::queued) queued.push_back(lease.get());
  for (Lease* lease : queued) lease->fail(Error::make(ErrorCode::capacity, "sandboxd is draining"));
  uv_timer_start(drain_timer_.get(), [](uv_timer_t* t) {
    auto* m = owner_of<Manager>(t);
    if (!m) return;
    m->keep_sessions_ = false;
    m->sessions_.freeze_journal();
    if (!m->leases_.empty()) log_warning("drain deadline over; cancelling " + std::to_string(m->leases_.size()) + " leases");
    std::vector<Lease*> rest;
    for (auto& [id, lease] : m->leases_) rest.push_back(lease.get());
    for (Lease* lease : rest) {
      if (lease->is_session() && lease->state() == Lease::State::idle)
        lease->close("sandboxd drained");
      else
        lease->cancel();
    }
  }, static_cast<uint64_t>(deadline.count()), 0);
  poke();
}

void Manager::drain(std::chrono::milliseconds grace, std::function<void()> done) {
  // Shutting down ends a rollout's drain: sessions close too.
  keep_sessions_ = false;
  uv_timer_stop(drain_timer_.get());
  draining_ = true;
  sessions_.freeze_journal();
  drained_ = std::move(done);
  pool_.stop();
  snapshot_flow_.stop();
  std::vector<Lease*> all;
  for (auto& [id, lease] : leases_) all.push_back(lease.get());
  for (Lease* lease : all) {
    if (lease->state() == Lease::State::queued)
      lease->fail(Error::make(ErrorCode::capacity, "sandboxd is shutting down"));
    else if (lease->is_session() && lease->state() == Lease::State::idle)
      lease->close("sandboxd is shutting down");  // busy ones close after their current job
  }
  uv_timer_start(drain_timer_.get(), [](uv_timer_t* t) {
    auto* m = owner_of<Manager>(t);
    if (!m) return;
    if (!m->leases_.empty()) log_warning("shutdown grace over; cancelling " + std::to_string(m->leases_.size()) + " leases");
    std::vector<Lease*> rest;
    for (auto& [id, lease] : m->leases_) rest.push_back(lease.get());
    for (Lease* lease : rest) lease->cancel();
  }, static_cast<uint64_t>(grace.count()), 0);
  poke();
}

void Manager::maybe_drained() {
  if (!draining_ || !leases_.empty() || !drained_) return;
  uv_timer_stop(drain_timer_.get());
  auto done = std::move(drained_);
  drained_ = nullptr;
  done();
}

}  // namespace sandbox::daemon
