// The daemon's metrics: counters, gauges and fixed-bucket histograms, kept
// in memory and rendered in Prometheus' text format (version 0.0.4) for
// the `metrics_request` of the control socket and D-Bus' Metrics().
//
// Labels are only ever drawn from small fixed sets (language, phase, path,
// error code, result...): never a run, session or uid, so the number of
// series is bounded whatever clients do.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox::daemon {

// Upper bounds of the latency buckets, in ms: a warm run on KVM (tens of
// ms) to the longest timeout (300 s), roughly 2.5x apart.
inline constexpr std::array<uint64_t, 14> kLatencyBucketsMs = {10,   25,   50,    100,   250,   500,    1000,
                                                               2500, 5000, 10000, 30000, 60000, 120000, 300000};

class Histogram {
 public:
  void observe(uint64_t ms);
  // Cumulative counts per bucket (Prometheus' `le`), then +Inf = count().
  std::array<uint64_t, kLatencyBucketsMs.size()> cumulative() const;
  uint64_t count() const { return count_; }
  uint64_t sum_ms() const { return sum_ms_; }

 private:
  std::array<uint64_t, kLatencyBucketsMs.size()> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_ms_ = 0;
};

// How a run's VM came to be: taken from the warm pool, restored from a
// snapshot, or booted.
enum class RunPath : uint8_t { warm, snapshot, cold };
inline constexpr size_t kRunPaths = 3;
std::string_view run_path_name(RunPath p);
// From a result's vm_start ("pool", "snapshot", "boot", "boot (snapshot failed)").
RunPath run_path_of(std::string_view vm_start);

enum class Phase : uint8_t { queue, boot, execute, total };
inline constexpr size_t kPhases = 4;
std::string_view phase_name(Phase p);

// How a run or exec ended, for sandboxd_runs_total{result}.
enum class RunOutcome : uint8_t { ok, exit_nonzero, timeout, signal, error };
inline constexpr size_t kRunOutcomes = 5;
std::string_view run_outcome_name(RunOutcome o);
RunOutcome run_outcome_of(const RunResult& r);

// Room for every code of the taxonomy, present and future (bounded).
inline constexpr size_t kErrorCodes = 32;
inline constexpr size_t kLanguages = 3;

// How the package layer cache (layers.h) answered a request for a layer:
// a layer it had, the build this request started, a build it waited on,
// an error, or a layer this request had fetched from the shared store.
enum class LayerRequest : uint8_t { hit, built, joined, failed, fetched };
inline constexpr size_t kLayerRequests = 5;
std::string_view layer_request_name(LayerRequest r);

// What a fetch from the shared store (F27) came to: the object was there
// and checked out; it was not there; the store could not be asked (or the
// object was over the size bound); it was there but unusable (a hash that
// differs, a description that does not parse or names other packages).
enum class CacheFetch : uint8_t { hit, miss, error, corrupt };
inline constexpr size_t kCacheFetches = 4;
std::string_view cache_fetch_name(CacheFetch f);
// A failed fetch's result: not_found a miss, image_corrupt corrupt, the rest errors.
CacheFetch cache_fetch_of(const Error& e);

// Transfers of one kind of object to and from the shared store.
struct CacheShareStats {
  std::array<uint64_t, kCacheFetches> fetches{};
  std::array<uint64_t, 2> uploads{};  // [ok, failed]
  uint64_t fetch_bytes = 0, upload_bytes = 0;
};

// Counted by the layer cache, which also fills the gauges when asked.
struct LayerStats {
  std::array<uint64_t, kLayerRequests> requests{};
  std::array<uint64_t, 2> builds{};        // [ok, failed]
  std::array<Histogram, 2> build_time{};   // [ok, failed]
  std::array<uint64_t, kCacheFetches> fetches{};  // from the shared store
  std::array<uint64_t, 2> uploads{};              // [ok, failed]
  uint64_t fetch_bytes = 0, upload_bytes = 0;
  uint64_t cache_bytes = 0;
  uint64_t layers = 0;
  uint64_t building = 0;
};

// What the core is doing right now: read when the metrics are rendered.
struct MetricsGauges {
  DaemonStatus status;
  uint32_t vms_leased = 0;  // VMs held by runs and sessions
  uint64_t memory_committed_mb = 0;  // guest memory of every live VM
  uint64_t snapshot_cache_bytes = 0;
  uint64_t snapshot_restores = 0;   // counted by the snapshot flow
  uint64_t snapshot_fallbacks = 0;  // restores that failed; the VM booted instead
  uint64_t pool_boot_failures = 0;  // counted by the warm pool
  LayerStats layers;                // zero on a host without layers
  CacheShareStats snapshot_share;   // counted by the snapshot flow
};

class Metrics {
 public:
  // A run (session = false) or a session exec that returned a result.
  void finished(bool session, const RunResult& r);
  // A run or session exec that ended in an error instead of a result.
  void failed(bool session);
  // Any request that ended in an error (runs, execs, sessions, files).
  void error(ErrorCode code);
  // A VM a run or session waited for failed to boot (each attempt).
  void boot_failed() { ++boot_failures_; }
  void session_opened() { ++sessions_opened_; }
  void session_closed() { ++sessions_closed_; }
  // A file into (upload) or out of a session, complete.
  void file_transfer(bool upload, uint64_t bytes);
  // A request refused before it ran: access, validation, limits.
  void denied(ErrorCode code);

  std::string render(const MetricsGauges& g) const;

 private:
  std::array<std::array<uint64_t, kRunOutcomes>, 2> runs_{};  // [session][outcome]
  std::array<uint64_t, kErrorCodes> errors_{};
  std::array<uint64_t, kErrorCodes> denials_{};
  uint64_t timeouts_ = 0;
  uint64_t oom_kills_ = 0;
  uint64_t boot_failures_ = 0;
  uint64_t sessions_opened_ = 0;
  uint64_t sessions_closed_ = 0;
  std::array<uint64_t, 2> file_transfers_{};  // [upload]
  std::array<uint64_t, 2> file_bytes_{};
  uint64_t network_connections_ = 0;
  std::array<uint64_t, 2> network_bytes_{};  // [in, out]
  uint64_t network_denials_ = 0;
  std::array<std::array<Histogram, kRunPaths>, kPhases> runs_latency_{};
};

// Prometheus text format, one family at a time: `# HELP`, `# TYPE`, then
// samples. Label values are escaped here (\\, \" and \n).
class PromText {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, const std::vector<std::pair<std::string_view, std::string>>& labels,
              uint64_t value);
  // A histogram's _bucket, _sum (seconds) and _count samples.
  void histogram(std::string_view name, const std::vector<std::pair<std::string_view, std::string>>& labels,
                 const Histogram& h);
  std::string take() { return std::move(out_); }

 private:
  void labels(const std::vector<std::pair<std::string_view, std::string>>& labels, std::string_view extra_key = {},
              std::string_view extra_value = {});
  std::string out_;
};

}  // namespace sandbox::daemon
