// The domain core: leases (runs and sessions) on VMs from the warm pool or
// freshly started, within one VM budget, admitted in arrival order within
// per-user limits. Knows nothing of sockets or D-Bus; the service layer
// (service.h) validates, authorizes and calls in here.
//
// Composition: Fleet (every VM, one budget) <- SnapshotFlow (restore or
// boot, templates) <- WarmPool; Scheduler (per-uid caps, queue);
// SessionRegistry (ids, ownership); a Lease per run or session.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/builder.h"
#include "daemon/config.h"
#include "daemon/fleet.h"
#include "daemon/layers.h"
#include "daemon/lease.h"
#include "daemon/metrics.h"
#include "daemon/pool.h"
#include "daemon/scheduler.h"
#include "daemon/sessions.h"
#include "daemon/snapshot_flow.h"

namespace sandbox::daemon {

// Defaults come from Config (config.h) through options_from (options.h).
struct ManagerOptions {
  std::string version;
  std::string accel_reason;  // why this accelerator, for status
  std::string host_limits;   // the per-VM cgroup limits, or why there are none
  uint32_t max_vms = 0;
  Scheduler::Limits limits;
  LeaseConfig lease;
  PoolOptions pool;
  // Requests waiting on one session: a client may pipeline, not flood.
  size_t max_session_jobs = 16;
  // The package layer cache (layers.h); null: no layers on this host.
  std::shared_ptr<LayerStore> layer_store;
  // What a layer key covers besides the request (layers.h): the root
  // image, each language's interpreter and installer, the index, and
  // whether code from the index runs at install time.
  struct LayerFacts {
    std::string base_image;
    std::string python, pip, node, npm, apt;
    std::string python_index_url, npm_registry_url;
    std::string apt_sources;  // one archive per line
    bool source_builds = false, install_scripts = false;
  } layer_facts;
  // The store nodes share layers through (layer_share.h), made on the
  // manager's loop; unset: layers are this node's own.
  std::function<std::unique_ptr<LayerRemote>(uv_loop_t*)> layer_remote;
  // The same store for snapshot templates (snapshot_share.h); unset: each
  // node saves its own.
  std::function<std::unique_ptr<SnapshotRemote>(uv_loop_t*)> snapshot_remote;
  // Builder VMs, which make the layers the cache lacks.
  BuilderOptions builder;
  // Where open sessions are kept for the next daemon (sessions.h); empty: nowhere.
  std::string sessions_journal;
  // Package sets with warm VMs of their own (built at start if missing).
  std::vector<PoolLayer> pool_layers;
};

class Manager : private LeaseHost {
 public:
  // `snapshots` may be null: every VM boots.
  Manager(uv_loop_t* loop, VmFactory& factory, SnapshotStore* snapshots, ManagerOptions options);
  ~Manager() override;
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Starts filling the warm pool.
  void start();
  // A run of `request` (valid, defaults applied); refusals fail here, the
  // rest reaches `sink` from a later loop turn.
  Result<LeaseId> run(const Caller& caller, uint64_t request_id, RunRequest request, std::weak_ptr<Sink> sink);
  // A session; its SessionList reply (or error) reaches `sink` once its VM is ready.
  Result<LeaseId> open_session(const Caller& caller, uint64_t request_id, SessionOptions options,
                               std::weak_ptr<Sink> sink);
  // A job on the caller's session `session` (not_found for another uid's).
  Result<void> submit(const Caller& caller, const std::string& session, Job job);
  // The caller of a run, or of a session still opening, went away.
  void cancel(LeaseId id);
  // The caller of a session job went away.
  void cancel_job(const std::string& session, uint64_t token);
  std::vector<SessionInfo> sessions(const Caller& caller) const;
  DaemonStatus status() const;
  std::vector<SnapshotInfo> snapshots(bool drop) { return snapshot_flow_.list(drop); }
  // The package layer cache and builds in progress, after dropping `drop`
  // (a key) or, with `drop_all`, every layer not in use.
  Result<std::vector<LayerInfo>> layers(const std::string& drop, bool drop_all);
  // Stops taking leases, empties the pool, lets running ones finish for
  // `grace`, then cancels the rest; `done` runs once nothing is left.
  void drain(std::chrono::milliseconds grace, std::function<void()> done);
  // For a rollout: as drain(), but sessions stay open and take jobs until
  // `deadline`; then what is left is cancelled and closed. The daemon keeps
  // serving status, metrics and the open sessions. Does nothing while
  // already draining.
  void drain_for_rollout(std::chrono::milliseconds deadline);
  // Sessions close once idle: shutting down, or a rollout's deadline passed.
  bool draining() const override { return draining_ && !keep_sessions_; }
  size_t leases() const { return leases_.size(); }
  // Counters the core and the service layer add to.
  Metrics& metrics() override { return metrics_; }
  // Every metric, with the gauges read now, in Prometheus' text format.
  std::string metrics_text();

 private:
  Lease* find(LeaseId id);
  // Admits lease `id` once its package layer is ready (at once without
  // packages); a failed build fails the lease.
  void admit_with_layer(LeaseId id, Language language, const std::vector<std::string>& packages);
  // What a layer of `packages` for `language` is keyed by on this host.
  LayerKeyInputs layer_inputs(Language language, const std::vector<std::string>& packages) const;
  void pump();
  void maybe_drained();

  // LeaseHost
  const LeaseConfig& lease_config() const override { return options_.lease; }
  std::unique_ptr<VmHandle> take_warm(const LeaseSpec& spec) override;
  void cold_start(const LeaseSpec& spec) override;
  bool make_room() override;
  Result<std::unique_ptr<VmHandle>> start_vm(const LeaseSpec& spec, VmEvents events, bool allow_restore,
                                             std::string* how) override;
  void restore_failed(const LeaseSpec& spec, const Error& e) override;
  void release_vm(std::unique_ptr<VmHandle> vm) override;
  void lease_ended(Lease& lease) override;
  void poke() override;

  uv_loop_t* loop_;
  ManagerOptions options_;
  Fleet fleet_;
  SnapshotFlow snapshot_flow_;
  WarmPool pool_;
  Scheduler scheduler_;
  SessionRegistry sessions_;
  Metrics metrics_;
  std::map<LeaseId, std::unique_ptr<Lease>> leases_;
  std::unique_ptr<Builder> builder_;
  std::unique_ptr<LayerCache> layers_;
  LeaseId next_id_ = 1;
  bool pump_posted_ = false;
  bool draining_ = false;
  bool keep_sessions_ = false;  // a rollout's drain, before its deadline
  std::function<void()> drained_;
  UvHandle<uv_timer_t> drain_timer_;
  Deferred later_;  // destroys ended leases, runs pumps
};

}  // namespace sandbox::daemon
