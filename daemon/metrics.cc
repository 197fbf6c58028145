#include "daemon/metrics.h"

#include <cstdio>

namespace sandbox::daemon {
namespace {

using Labels = std::vector<std::pair<std::string_view, std::string>>;

size_t code_index(ErrorCode code) {
  auto i = static_cast<size_t>(code);
  return i < kErrorCodes ? i : static_cast<size_t>(ErrorCode::internal);
}

// Every code of the taxonomy, so each series exists from the start (a
// rate over a series that appears late misses its first increments).
std::vector<ErrorCode> all_codes() {
  std::vector<ErrorCode> out;
  for (size_t i = 0; i < kErrorCodes; ++i) {
    auto code = static_cast<ErrorCode>(i);
    auto back = error_code_from_name(error_code_name(code));
    if (back && *back == code) out.push_back(code);
  }
  return out;
}

std::string seconds(uint64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llu.%03llu", static_cast<unsigned long long>(ms / 1000),
                static_cast<unsigned long long>(ms % 1000));
  return buf;
}

}  // namespace

void Histogram::observe(uint64_t ms) {
  for (size_t i = 0; i < kLatencyBucketsMs.size(); ++i)
    if (ms <= kLatencyBucketsMs[i]) {
      ++buckets_[i];
      break;
    }
  ++count_;
  sum_ms_ += ms;
}

std::array<uint64_t, kLatencyBucketsMs.size()> Histogram::cumulative() const {
  std::array<uint64_t, kLatencyBucketsMs.size()> out{};
  uint64_t acc = 0;
  for (size_t i = 0; i < out.size(); ++i) out[i] = acc += buckets_[i];
  return out;
}

std::string_view run_path_name(RunPath p) {
  static constexpr std::string_view kNames[] = {"warm", "snapshot", "cold"};
  return kNames[static_cast<size_t>(p)];
}

RunPath run_path_of(std::string_view vm_start) {
  if (vm_start == "pool") return RunPath::warm;
  if (vm_start == "snapshot") return RunPath::snapshot;
  return RunPath::cold;  // "boot", and a boot after a failed restore
}

std::string_view phase_name(Phase p) {
  static constexpr std::string_view kNames[] = {"queue", "boot", "execute", "total"};
  return kNames[static_cast<size_t>(p)];
}

std::string_view run_outcome_name(RunOutcome o) {
  static constexpr std::string_view kNames[] = {"ok", "exit_nonzero", "timeout", "signal", "error"};
  return kNames[static_cast<size_t>(o)];
}

RunOutcome run_outcome_of(const RunResult& r) {
  if (r.timed_out) return RunOutcome::timeout;
  if (r.signal != 0) return RunOutcome::signal;
  return r.exit_code == 0 ? RunOutcome::ok : RunOutcome::exit_nonzero;
}

std::string_view layer_request_name(LayerRequest r) {
  static constexpr std::string_view kNames[] = {"hit", "built", "joined", "failed", "fetched"};
  return kNames[static_cast<size_t>(r)];
}

CacheFetch cache_fetch_of(const Error& e) {
  return e.code == ErrorCode::not_found       ? CacheFetch::miss
         : e.code == ErrorCode::image_corrupt ? CacheFetch::corrupt
                                              : CacheFetch::error;
}

std::string_view cache_fetch_name(CacheFetch f) {
  static constexpr std::string_view kNames[] = {"hit", "miss", "error", "corrupt"};
  return kNames[static_cast<size_t>(f)];
}

void Metrics::finished(bool session, const RunResult& r) {
  ++runs_[session][static_cast<size_t>(run_outcome_of(r))];
  if (r.timed_out) ++timeouts_;
  // SIGKILL without a timeout: the guest's memory limit ended the code.
  if (!r.timed_out && r.signal == 9) ++oom_kills_;
  network_connections_ += r.network.connections;
  network_bytes_[0] += r.network.bytes_in;
  network_bytes_[1] += r.network.bytes_out;
  network_denials_ += r.network.denied.size();
  if (session) return;  // a session's later execs have no queue or boot of their own
  auto& by_phase = runs_latency_;
  size_t path = static_cast<size_t>(run_path_of(r.vm_start));
  by_phase[static_cast<size_t>(Phase::queue)][path].observe(r.timing.setup_ms);
  by_phase[static_cast<size_t>(Phase::boot)][path].observe(r.timing.boot_ms + r.timing.startup_ms);
  by_phase[static_cast<size_t>(Phase::execute)][path].observe(r.execution_time_ms);
  by_phase[static_cast<size_t>(Phase::total)][path].observe(r.timing.total_ms);
}

void Metrics::failed(bool session) {
  ++runs_[session][static_cast<size_t>(RunOutcome::error)];
}

void Metrics::error(ErrorCode code) { ++errors_[code_index(code)]; }

void Metrics::file_transfer(bool upload, uint64_t bytes) {
  ++file_transfers_[upload];
  file_bytes_[upload] += bytes;
}

void Metrics::denied(ErrorCode code) { ++denials_[code_index(code)]; }

std::string Metrics::render(const MetricsGauges& g) const {
  PromText t;
  const auto codes = all_codes();
  const DaemonStatus& s = g.status;

  t.family("sandboxd_runs_total", "counter", "Runs and session execs by how they ended.");
  for (int session = 0; session < 2; ++session)
    for (size_t o = 0; o < kRunOutcomes; ++o)
      t.sample("sandboxd_runs_total",
               {{"kind", session ? "session_exec" : "run"},
                {"result", std::string(run_outcome_name(static_cast<RunOutcome>(o)))}},
               runs_[session][o]);
  t.family("sandboxd_errors_total", "counter", "Requests that ended in an error, by error code.");
  for (auto c : codes) t.sample("sandboxd_errors_total", {{"code", std::string(error_code_name(c))}}, errors_[code_index(c)]);
  t.family("sandboxd_denials_total", "counter", "Requests refused before they ran (access, validation, limits), by error code.");
  for (auto c : codes) t.sample("sandboxd_denials_total", {{"code", std::string(error_code_name(c))}}, denials_[code_index(c)]);
  t.family("sandboxd_timeouts_total", "counter", "Runs and execs stopped at their timeout.");
  t.sample("sandboxd_timeouts_total", {}, timeouts_);
  t.family("sandboxd_oom_kills_total", "counter", "Runs and execs killed by SIGKILL without a timeout (the guest's memory limit).");
  t.sample("sandboxd_oom_kills_total", {}, oom_kills_);
  t.family("sandboxd_boot_failures_total", "counter", "VM boots that failed (each attempt; warm pool included).");
  t.sample("sandboxd_boot_failures_total", {}, boot_failures_ + g.pool_boot_failures);
  t.family("sandboxd_pool_hits_total", "counter", "Runs served by a warm VM, per language.");
  for (const auto& p : s.pool) t.sample("sandboxd_pool_hits_total", {{"language", std::string(language_name(p.language))}}, p.hits);
  t.family("sandboxd_pool_misses_total", "counter", "Runs the warm pool could have served but had no VM for, per language.");
  for (const auto& p : s.pool)
    t.sample("sandboxd_pool_misses_total", {{"language", std::string(language_name(p.language))}}, p.misses);
  t.family("sandboxd_snapshot_restores_total", "counter", "VMs started by restoring a snapshot.");
  t.sample("sandboxd_snapshot_restores_total", {}, g.snapshot_restores);
  t.family("sandboxd_snapshot_fallbacks_total", "counter", "Restores that failed before the VM was ready; the VM booted instead.");
  t.sample("sandboxd_snapshot_fallbacks_total", {}, g.snapshot_fallbacks);
  t.family("sandboxd_sessions_opened_total", "counter", "Sessions opened.");
  t.sample("sandboxd_sessions_opened_total", {}, sessions_opened_);
  t.family("sandboxd_sessions_closed_total", "counter", "Sessions closed (by their owner, idle timeout or VM end).");
  t.sample("sandboxd_sessions_closed_total", {}, sessions_closed_);
  t.family("sandboxd_file_transfers_total", "counter", "Session file transfers completed.");
  for (int up = 1; up >= 0; --up)
    t.sample("sandboxd_file_transfers_total", {{"direction", up ? "upload" : "download"}}, file_transfers_[up]);
  t.family("sandboxd_file_bytes_total", "counter", "Bytes of session files transferred.");
  for (int up = 1; up >= 0; --up)
    t.sample("sandboxd_file_bytes_total", {{"direction", up ? "upload" : "download"}}, file_bytes_[up]);
  t.family("sandboxd_network_connections_total", "counter", "Connections through the network policy, both directions.");
  t.sample("sandboxd_network_connections_total", {}, network_connections_);
  t.family("sandboxd_network_bytes_total", "counter", "Bytes through the network policy (in: to the guest).");
  t.sample("sandboxd_network_bytes_total", {{"direction", "in"}}, network_bytes_[0]);
  t.sample("sandboxd_network_bytes_total", {{"direction", "out"}}, network_bytes_[1]);
  t.family("sandboxd_network_denials_total", "counter",
           "Connections and lookups the network policy refused (at most 32 counted per run or exec).");
  t.sample("sandboxd_network_denials_total", {}, network_denials_);
  const LayerStats& l = g.layers;
  t.family("sandboxd_layer_requests_total", "counter",
           "Requests for a package layer by how the cache answered (hit; built: started the build; joined: waited "
           "on one; failed; fetched: from the shared store).");
  for (size_t r = 0; r < kLayerRequests; ++r)
    t.sample("sandboxd_layer_requests_total", {{"cache", std::string(layer_request_name(static_cast<LayerRequest>(r)))}},
             l.requests[r]);
  t.family("sandboxd_layer_builds_total", "counter", "Package layer builds that ended, by result.");
  t.sample("sandboxd_layer_builds_total", {{"result", "ok"}}, l.builds[0]);
  t.sample("sandboxd_layer_builds_total", {{"result", "failed"}}, l.builds[1]);
  // The shared store (F27): package layers and snapshot templates.
  struct Kind {
    const char* name;
    const std::array<uint64_t, kCacheFetches>& fetches;
    const std::array<uint64_t, 2>& uploads;
    uint64_t fetch_bytes, upload_bytes;
  };
  const CacheShareStats& ss = g.snapshot_share;
  const Kind kinds[] = {{"layer", l.fetches, l.uploads, l.fetch_bytes, l.upload_bytes},
                        {"snapshot", ss.fetches, ss.uploads, ss.fetch_bytes, ss.upload_bytes}};
  t.family("sandboxd_cache_fetches_total", "counter",
           "Fetches from the shared cache store by result (hit; miss: not there; error: unreachable, failed or over "
           "the size bound; corrupt: refused by its hash or description).");
  for (const auto& k : kinds)
    for (size_t r = 0; r < kCacheFetches; ++r)
      t.sample("sandboxd_cache_fetches_total",
               {{"kind", k.name}, {"result", std::string(cache_fetch_name(static_cast<CacheFetch>(r)))}}, k.fetches[r]);
  t.family("sandboxd_cache_uploads_total", "counter", "Uploads to the shared cache store by result.");
  for (const auto& k : kinds) {
    t.sample("sandboxd_cache_uploads_total", {{"kind", k.name}, {"result", "ok"}}, k.uploads[0]);
    t.sample("sandboxd_cache_uploads_total", {{"kind", k.name}, {"result", "failed"}}, k.uploads[1]);
  }
  t.family("sandboxd_cache_transfer_bytes_total", "counter",
           "Bytes of objects fetched from and uploaded to the shared cache store (as stored: compressed templates "
           "count compressed).");
  for (const auto& k : kinds) {
    t.sample("sandboxd_cache_transfer_bytes_total", {{"kind", k.name}, {"direction", "fetch"}}, k.fetch_bytes);
    t.sample("sandboxd_cache_transfer_bytes_total", {{"kind", k.name}, {"direction", "upload"}}, k.upload_bytes);
  }

  uint32_t pool_ready = 0, pool_booting = 0;
  for (const auto& p : s.pool) pool_ready += p.ready, pool_booting += p.booting;
  uint32_t accounted = pool_ready + pool_booting + g.vms_leased;
  t.family("sandboxd_vms", "gauge", "Live VMs by state (other: snapshot templates and VMs being torn down).");
  t.sample("sandboxd_vms", {{"state", "leased"}}, g.vms_leased);
  t.sample("sandboxd_vms", {{"state", "pool_ready"}}, pool_ready);
  t.sample("sandboxd_vms", {{"state", "pool_booting"}}, pool_booting);
  t.sample("sandboxd_vms", {{"state", "other"}}, s.vms > accounted ? s.vms - accounted : 0);
  t.family("sandboxd_vms_max", "gauge", "max_concurrent_vms: every VM counts against it.");
  t.sample("sandboxd_vms_max", {}, s.max_vms);
  t.family("sandboxd_pool_ready", "gauge", "Warm VMs ready, per language.");
  for (const auto& p : s.pool) t.sample("sandboxd_pool_ready", {{"language", std::string(language_name(p.language))}}, p.ready);
  t.family("sandboxd_pool_target", "gauge", "Configured warm pool size, per language.");
  for (const auto& p : s.pool) t.sample("sandboxd_pool_target", {{"language", std::string(language_name(p.language))}}, p.target);
  t.family("sandboxd_runs_active", "gauge", "Runs holding a VM.");
  t.sample("sandboxd_runs_active", {}, s.runs_active);
  t.family("sandboxd_queue_depth", "gauge", "Runs and sessions waiting for a VM slot.");
  t.sample("sandboxd_queue_depth", {}, s.runs_queued);
  t.family("sandboxd_sessions_open", "gauge", "Open sessions.");
  t.sample("sandboxd_sessions_open", {}, s.sessions);
  t.family("sandboxd_memory_committed_bytes", "gauge", "Guest memory of every live VM.");
  t.sample("sandboxd_memory_committed_bytes", {}, g.memory_committed_mb << 20);
  t.family("sandboxd_snapshot_cache_bytes", "gauge", "Bytes in the snapshot cache.");
  t.sample("sandboxd_snapshot_cache_bytes", {}, g.snapshot_cache_bytes);
  t.family("sandboxd_layer_cache_bytes", "gauge", "Bytes of package layer images in the cache.");
  t.sample("sandboxd_layer_cache_bytes", {}, l.cache_bytes);
  t.family("sandboxd_layer_cache_layers", "gauge", "Package layers in the cache (builds in progress not included).");
  t.sample("sandboxd_layer_cache_layers", {}, l.layers);
  t.family("sandboxd_layer_builds_in_progress", "gauge", "Package layer builds running.");
  t.sample("sandboxd_layer_builds_in_progress", {}, l.building);

  t.family("sandboxd_run_phase_seconds", "histogram",
           "Latency of runs by phase (queue; boot or restore with interpreter start-up; execute; total) and by "
           "how the VM started (warm, snapshot, cold).");
  for (size_t ph = 0; ph < kPhases; ++ph)
    for (size_t path = 0; path < kRunPaths; ++path)
      t.histogram("sandboxd_run_phase_seconds",
                  {{"phase", std::string(phase_name(static_cast<Phase>(ph)))},
                   {"path", std::string(run_path_name(static_cast<RunPath>(path)))}},
                  runs_latency_[ph][path]);
  t.family("sandboxd_layer_build_seconds", "histogram", "Duration of package layer builds, by result.");
  t.histogram("sandboxd_layer_build_seconds", {{"result", "ok"}}, l.build_time[0]);
  t.histogram("sandboxd_layer_build_seconds", {{"result", "failed"}}, l.build_time[1]);
  return t.take();
}

void PromText::family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  for (char c : help) {
    if (c == '\\') out_ += "\\\\";
    else if (c == '\n') out_ += "\\n";
    else out_ += c;
  }
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void PromText::labels(const Labels& labels, std::string_view extra_key, std::string_view extra_value) {
  if (labels.empty() && extra_key.empty()) return;
  out_ += '{';
  bool first = true;
  auto one = [&](std::string_view k, std::string_view v) {
    if (!first) out_ += ',';
    first = false;
    out_ += k;
    out_ += "=\"";
    for (char c : v) {
      if (c == '\\') out_ += "\\\\";
      else if (c == '"') out_ += "\\\"";
      else if (c == '\n') out_ += "\\n";
      else out_ += c;
    }
    out_ += '"';
  };
  for (const auto& [k, v] : labels) one(k, v);
  if (!extra_key.empty()) one(extra_key, extra_value);
  out_ += '}';
}

void PromText::sample(std::string_view name, const Labels& l, uint64_t value) {
  out_ += name;
  labels(l);
  out_ += ' ';
  out_ += std::to_string(value);
  out_ += '\n';
}

void PromText::histogram(std::string_view name, const Labels& l, const Histogram& h) {
  auto cum = h.cumulative();
  std::string bucket = std::string(name) + "_bucket";
  for (size_t i = 0; i < cum.size(); ++i) {
    out_ += bucket;
    labels(l, "le", seconds(kLatencyBucketsMs[i]));
    out_ += ' ' + std::to_string(cum[i]) + '\n';
  }
  out_ += bucket;
  labels(l, "le", "+Inf");
  out_ += ' ' + std::to_string(h.count()) + '\n';
  out_ += std::string(name) + "_sum";
  labels(l);
  out_ += ' ' + seconds(h.sum_ms()) + '\n';
  out_ += std::string(name) + "_count";
  labels(l);
  out_ += ' ' + std::to_string(h.count()) + '\n';
}

}  // namespace sandbox::daemon
