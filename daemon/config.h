// sandboxd configuration: defaults here, then /etc/sandboxd/sandboxd.conf,
// then SANDBOXD_<KEY> environment variables, then --key value flags.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox::daemon {

enum class Accel { automatic, kvm, tcg };
std::string_view accel_name(Accel accel);

inline constexpr std::string_view kDefaultConfigPath = "/etc/sandboxd/sandboxd.conf";

struct Config {
  // Control socket; tests and non-root users point it at a private path.
  std::string socket = "/run/sandboxd/sandboxd.sock";
  // Guest images (vmlinux, initramfs.cpio, rootfs.erofs, manifest).
  std::string images = "/var/lib/sandboxd/images";
  // Daemon-owned state; per-VM scratch lives below it.
  std::string state_dir = "/var/lib/sandboxd";
  std::string qemu = "qemu-system-x86_64";
  // auto: KVM only where a probe boot proves it works, else TCG.
  Accel accel = Accel::automatic;
  // Who may use the socket besides root and the daemon's own uid.
  std::vector<uid_t> allowed_uids;
  std::vector<gid_t> allowed_gids;
  // A boot that has not said hello by then is killed (and retried once).
  uint32_t boot_timeout_ms = 20'000;
  uint32_t boot_retries = 1;
  uint32_t vcpus = 1;
  // TCG translation cache per VM; the default (1 GiB) multiplies by VM count.
  uint32_t tcg_tb_size_mb = 32;
  // Extra time past a run's timeout before the daemon kills the VM itself.
  uint32_t kill_slack_ms = 5'000;
  // At a run's timeout its processes get SIGTERM, then SIGKILL this much later.
  uint32_t kill_grace_ms = 2'000;
  // Processes and threads a run may have at once (guest cgroup pids.max).
  uint32_t pids_max = 256;
  // VMs alive at once, warm ones included; 0 derives it from host memory.
  uint32_t max_concurrent_vms = 0;
  // Runs one uid may have running or queued; 0 means three quarters of the VMs.
  uint32_t max_runs_per_uid = 0;
  // How long a run waits for a VM slot before failing with `capacity`.
  uint32_t queue_timeout_ms = 30'000;
  // Sessions one uid may have open; each holds a VM until closed or idle.
  uint32_t max_sessions_per_uid = 4;
  // A session unused this long is closed (a creator may ask for 10 s-1 h).
  uint32_t session_idle_timeout_ms = 300'000;
  // Warm VMs per language, each with its interpreter waiting for code.
  uint32_t pool_python = 2;
  uint32_t pool_javascript = 1;
  uint32_t pool_raw = 1;
  // Warm VMs with a package layer attached, per package set (parse_pool_layer).
  std::vector<std::string> pool_layers;
  // Warm VMs have this memory; runs asking for another size boot cold.
  uint32_t pool_memory_mb = 256;
  // Pool VMs booted or restored at once; 0: one per host CPU, at most
  // kMaxDefaultRefills (options_from).
  uint32_t pool_refill_concurrency = 0;
  // A warm VM idle this long is replaced by a fresh one.
  uint32_t pool_max_idle_ms = 600'000;
  // Idle warm VMs are pinged this often; one that misses a ping is replaced.
  uint32_t pool_health_interval_ms = 15'000;
  // An interpreter's start-up (before the code's own clock starts) is
  // bounded by this; past it the exec fails with `timeout`.
  uint32_t startup_timeout_ms = 60'000;
  // Control socket: connections at once, in all and per uid.
  uint32_t max_connections = 1024;
  uint32_t max_connections_per_uid = 64;
  // A connection with nothing in flight is closed after this long.
  uint32_t client_idle_timeout_ms = 600'000;
  // A frame begun must be complete within this long.
  uint32_t frame_timeout_ms = 30'000;
  // On SIGTERM, running runs get this long to finish before they are cancelled.
  uint32_t shutdown_grace_ms = 10'000;
  // Restore VMs from memory snapshots instead of booting them.
  bool snapshots = true;
  // Restore warm-pool VMs from snapshots too (else only cold runs restore).
  // Under TCG a restored pool VM runs a trivial program before it is
  // offered, so its translation cache is warm for the caller.
  bool pool_restore = true;
  // Disk the snapshot cache may use; the least recently used go first.
  uint32_t snapshot_cache_mb = 4096;
  // Run as root, the daemon starts each QEMU as this user, with no
  // capabilities; it must exist (sysusers.d creates it).
  std::string qemu_user = "qemu-vm";
  // Group given the control socket (mode 0660); its members may connect.
  // Skipped, with a warning, when the group does not exist.
  std::string socket_group = "sandbox";
  // cgroup v2 mount and the daemon's subtree below it; empty: found from
  // /proc/self/mountinfo and the daemon's own cgroup (systemd's Delegate=yes).
  std::string cgroup_root;
  std::string cgroup_base;
  // Refuse to start when memory, pids or cpu cannot be limited per VM on
  // the host; off: carry on with the guest-side limits and QEMU's -m.
  bool require_cgroup_limits = false;
  // Per-VM host limits: memory.max is guest memory plus this overhead.
  uint32_t vm_memory_overhead_mb = 192;
  // pids.max of a QEMU (its threads).
  uint32_t vm_pids_max = 128;
  // cpu.max of a QEMU in percent of one CPU; 0: unlimited.
  uint32_t vm_cpu_percent = 0;
  // D-Bus interface: "off", "system" (the system bus) or a bus address.
  std::string dbus = "off";
  std::string log_level = "info";
  // CA certificates (PEM) added to every guest's store, for a proxy or an
  // internal service with a private CA; empty: Debian's store alone.
  std::string extra_ca_file;
  // Network (SPEC F11-F13). Allowed names are resolved with this resolver
  // ("ADDRESS[:PORT]"); empty: the host's own.
  std::string network_resolver;
  // Special-purpose ranges (loopback, private, link-local...) VMs may still
  // reach; requests can never widen this. Comma-separated CIDRs.
  std::vector<std::string> network_allowed_ranges;
  // What `--network` without domains means; empty: such a request is refused.
  std::vector<std::string> default_allowed_domains;
  // Connections one VM may have open at once, both directions.
  uint32_t network_max_connections = 64;
  // A connection not established (or a TLS/HTTP request not sent) within
  // this is refused; one with no traffic for the idle timeout is closed.
  uint32_t network_connect_timeout_ms = 10'000;
  uint32_t network_idle_timeout_ms = 300'000;
  // Packages (SPEC F14). Requests must pin exact versions ("==", an exact
  // npm version): a range resolves differently tomorrow, under the same key.
  bool packages_require_pinned = true;
  // A data file of allowed names ("python NAME" / "javascript NAME" lines);
  // empty: any name the index has.
  std::string package_allowlist;
  // The only hosts a builder VM reaches; a client never chooses its index.
  std::string python_index_url = "https://pypi.org/simple";
  std::string npm_registry_url = "https://registry.npmjs.org";
  // Hosts the index sends downloads to (PyPI's files live apart from its
  // index): builder VMs may reach them too, and nothing else.
  std::vector<std::string> package_download_hosts = {"files.pythonhosted.org"};
  // Debian archives for "apt:" packages, as "URL SUITE COMPONENT..." (the
  // guest root's own suites by default); their hosts are all a builder VM
  // installing Debian packages reaches.
  std::vector<std::string> apt_sources = {"http://deb.debian.org/debian bookworm main",
                                          "http://deb.debian.org/debian bookworm-updates main",
                                          "http://deb.debian.org/debian-security bookworm-security main"};
  // The OpenPGP keyring those archives are signed with; empty: the guest
  // root's Debian archive keyring.
  std::string apt_keyring_file;
  // Guest memory of a builder VM: installers need more than a run.
  uint32_t package_builder_memory_mb = 1024;
  // Source distributions run arbitrary build code: wheels only by default.
  bool package_source_builds = false;
  // npm install scripts run arbitrary code: off by default.
  bool npm_install_scripts = false;
  // A builder VM that has not finished by then is killed: `timeout`.
  uint32_t package_build_timeout_ms = 300'000;
  // Disk the package layer cache may use; the least recently used layer
  // not in use goes first.
  uint32_t layer_cache_mb = 4096;
  // Scale-out (SPEC F27): an S3-compatible object store that nodes share
  // package layers through, path-style http(s)://HOST[:PORT]/BUCKET[/PREFIX];
  // empty: none. A layer missing here is fetched from it before a build.
  std::string cache_store_url;
  // Signed into requests (SigV4) with the credentials.
  std::string cache_store_region = "us-east-1";
  // aws_access_key_id / aws_secret_access_key lines; empty: unsigned requests.
  std::string cache_store_credentials;
  // Put the layers this node builds into the store.
  bool cache_store_upload = true;
  // One transfer, connecting included; past it the node builds for itself.
  uint32_t cache_store_timeout_ms = 120'000;
  // The largest layer fetched: the store is not trusted with the disk.
  uint32_t cache_store_max_mb = 2048;
};

// Debian archives a builder may use: a release, its updates and security
// suites, and a few of the operator's own.
inline constexpr size_t kMaxAptSources = 8;

// A pool_layers entry: "python:2:numpy==1.26.4 pandas==2.1.4".
inline constexpr size_t kMaxPoolLayers = 5;
struct PoolLayer {
  Language language = Language::python;
  uint32_t count = 0;
  std::vector<std::string> packages;  // canonical, sorted
};
Result<PoolLayer> parse_pool_layer(std::string_view text);

// One "key = value" assignment from any source; `origin` names the source
// in errors ("/etc/sandboxd/sandboxd.conf:12", "SANDBOXD_VCPUS", "--vcpus").
Result<void> config_set(Config& config, std::string_view key, std::string_view value, std::string_view origin);
// Parses a config file's text; unknown keys and bad values are errors.
Result<void> config_parse(Config& config, std::string_view text, std::string_view path);
// Applies SANDBOXD_* variables from `environ`-style entries.
Result<void> config_apply_env(Config& config, char** envp);
// The documented sample file: every key, its description and its default
// (etc/sandboxd.conf is this text, checked by a unit test).
std::string config_sample();
// Keys and their one-line descriptions, for --help and the sample file.
std::vector<std::pair<std::string, std::string>> config_keys();

}  // namespace sandbox::daemon
