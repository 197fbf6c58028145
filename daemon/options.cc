#include "daemon/options.h"

#include <algorithm>

#include "daemon/builder.h"

namespace sandbox::daemon {

uint32_t default_max_vms(uint64_t host_memory_kb, long cpus, uint32_t vm_mb, Accel accel) {
  uint64_t per_vm_mb = vm_mb + 64;
  uint64_t n = host_memory_kb / 1024 * 3 / 4 / per_vm_mb;
  uint64_t per_cpu = accel == Accel::kvm ? 16 : 4;
  if (cpus > 0) n = std::min<uint64_t>(n, static_cast<uint64_t>(cpus) * per_cpu);
  return static_cast<uint32_t>(std::clamp<uint64_t>(n, 1, 1000));
}

DaemonOptions options_from(const Config& c, const RuntimeFacts& f) {
  using ms = std::chrono::milliseconds;
  DaemonOptions o;
  auto& m = o.manager;
  m.version = PROJECT_VERSION;
  m.accel_reason = f.accel_reason;
  m.host_limits = f.host_limits;
  m.max_vms = c.max_concurrent_vms ? c.max_concurrent_vms
                                   : default_max_vms(f.host_memory_kb, f.cpus, c.pool_memory_mb, f.accel);
  m.limits.runs_per_uid = c.max_runs_per_uid ? c.max_runs_per_uid : std::max(1u, m.max_vms * 3 / 4);
  m.limits.sessions_per_uid = c.max_sessions_per_uid;
  m.lease.queue_timeout = ms(c.queue_timeout_ms);
  m.lease.startup_timeout = ms(c.startup_timeout_ms);
  m.lease.kill_grace = ms(c.kill_grace_ms);
  m.lease.kill_slack = ms(c.kill_slack_ms);
  m.lease.boot_retries = c.boot_retries;
  m.lease.pids_max = c.pids_max;
  m.lease.accelerator = std::string(accel_name(f.accel));
  m.pool.size = {c.pool_python, c.pool_javascript, c.pool_raw};
  m.pool.memory_mb = c.pool_memory_mb;
  // One refill per host CPU by default: a restore or boot waits on QEMU's
  // own threads and I/O part of the time, so two at once on two CPUs refill
  // a drained pool about 1.6 times as fast as one at a time.
  m.pool.refill_concurrency = c.pool_refill_concurrency
                                  ? c.pool_refill_concurrency
                                  : static_cast<uint32_t>(std::clamp<long>(f.cpus, 1, kMaxDefaultRefills));
  m.pool.max_idle = ms(c.pool_max_idle_ms);
  m.pool.health_interval = ms(c.pool_health_interval_ms);
  m.pool.restore = c.pool_restore;
  // Pool VMs wait for callers anyway: under TCG, a restored one spends that
  // time warming its translation cache rather than the first run's.
  m.pool.warm_up = f.accel == Accel::tcg;
  // A layer key covers the root image and the tools that made the layer;
  // a tool the image lacks is named "none" (its layers cannot be built).
  auto tool = [&](std::string_view name) {
    for (const auto& t : f.images.tools)
      if (t.name == name) return t.package + "=" + t.version;
    return std::string("none");
  };
  auto& lf = m.layer_facts;
  for (const auto& i : f.images.images)
    if (i.role == "rootfs") lf.base_image = i.sha256;
  lf.python = tool("python3");
  lf.pip = tool("pip");
  lf.node = tool("nodejs");
  lf.npm = tool("npm");
  lf.apt = tool("apt");
  for (const auto& src : c.apt_sources) lf.apt_sources += src + "\n";
  lf.python_index_url = c.python_index_url;
  lf.npm_registry_url = c.npm_registry_url;
  lf.source_builds = c.package_source_builds;
  lf.install_scripts = c.npm_install_scripts;
  for (const auto& text : c.pool_layers)
    if (auto set = parse_pool_layer(text)) m.pool_layers.push_back(std::move(*set));
  auto& b = m.builder;
  b.available = std::any_of(f.images.images.begin(), f.images.images.end(),
                            [](const ImageFileInfo& i) { return i.role == "builder"; });
  b.memory_mb = c.package_builder_memory_mb;
  b.timeout = ms(c.package_build_timeout_ms);
  // A layer never outgrows the cache it goes into.
  b.scratch_bytes = std::min<uint64_t>(uint64_t{c.layer_cache_mb} << 20, uint64_t{8} << 30);
  // URLs were checked when the configuration was read.
  if (auto h = index_host_entry(c.python_index_url)) b.python_hosts.push_back(*h);
  if (auto h = index_host_entry(c.npm_registry_url)) b.npm_hosts.push_back(*h);
  for (const auto& h : c.package_download_hosts) {
    b.python_hosts.push_back(h);
    b.npm_hosts.push_back(h);
  }
  b.apt_sources = lf.apt_sources;
  for (const auto& src : c.apt_sources)
    if (auto h = index_host_entry(src.substr(0, src.find(' ')))) b.apt_hosts.push_back(*h);
  // The keyring's bytes are read at start-up (main.cc).

  auto& s = o.service;
  s.access = {c.allowed_uids, c.allowed_gids, f.daemon_uid};
  // Members of the socket's group may connect, by file mode and by policy.
  if (f.socket_gid) s.access.allowed_gids.push_back(*f.socket_gid);
  s.default_idle_timeout = ms(c.session_idle_timeout_ms);
  s.images = f.images;
  s.default_domains = c.default_allowed_domains;
  // The allowlist file is read by the daemon at start-up (main.cc).
  s.packages.require_pinned = c.packages_require_pinned;

  auto& l = o.control;
  l.max_connections = c.max_connections;
  l.max_connections_per_uid = c.max_connections_per_uid;
  l.idle_timeout = ms(c.client_idle_timeout_ms);
  l.frame_timeout = ms(c.frame_timeout_ms);
  return o;
}

}  // namespace sandbox::daemon
