// sandboxd: the host service. Reads configuration, prepares the host side
// of every VM (images, user, seccomp, cgroups, recovery), picks the
// accelerator, then composes the core, the service layer and the two
// transports, and runs until SIGTERM or SIGINT.
#include <signal.h>
#include <linux/close_range.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <sstream>
#include <string>

#include "common/io.h"
#include "common/packages.h"
#include "common/sysinfo.h"
#include "daemon/accel.h"
#include "daemon/config.h"
#include "daemon/control_socket.h"
#include "daemon/dbus.h"
#include "daemon/digest.h"
#include "daemon/images.h"
#include "daemon/layer_share.h"
#include "daemon/log.h"
#include "daemon/options.h"
#include "daemon/privileges.h"
#include "daemon/qemu_seccomp.h"
#include "daemon/recovery.h"
#include "daemon/snapshot_share.h"
#include "daemon/snapshots.h"
#include "daemon/vm.h"

extern char** environ;

namespace sandbox::daemon {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: sandboxd [--config FILE] [--KEY VALUE]...\n"
               "Runs untrusted code in disposable QEMU microVMs; clients talk to it through\n"
               "the control socket (sandboxctl, libsandbox) and optionally D-Bus.\n\n"
               "Configuration comes from %s (or --config FILE), then SANDBOXD_<KEY>\n"
               "environment variables, then --KEY VALUE flags ('-' and '_' are alike).\n\nKeys:\n",
               std::string(kDefaultConfigPath).c_str());
  for (const auto& [key, help] : config_keys()) std::fprintf(out, "  --%-24s %s\n", key.c_str(), help.c_str());
  std::fprintf(out,
               "\n  --config FILE              configuration file\n"
               "  --print-config             a configuration file with every key and its default\n"
               "  --help                     this text\n");
}

Result<Config> load_config(int argc, char** argv) {
  Config config;
  std::string config_path(kDefaultConfigPath);
  bool explicit_config = false;
  std::vector<std::pair<std::string, std::string>> flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (arg == "--print-config") {
      std::fputs(config_sample().c_str(), stdout);
      std::exit(0);
    }
    if (!arg.starts_with("--")) return Error::make(ErrorCode::invalid_argument, "unexpected argument '" + arg + "'");
    std::string key = arg.substr(2), value;
    if (auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return Error::make(ErrorCode::invalid_argument, "--" + key + " needs a value");
    }
    std::replace(key.begin(), key.end(), '-', '_');
    if (key == "config") {
      config_path = value;
      explicit_config = true;
    } else {
      flags.emplace_back(key, value);
    }
  }
  if (auto text = read_file(config_path, 1 << 20)) {
    if (auto r = config_parse(config, *text, config_path); !r) return std::move(r).error();
  } else if (explicit_config) {
    return std::move(text).error();
  }
  if (auto r = config_apply_env(config, environ); !r) return std::move(r).error();
  for (const auto& [key, value] : flags)
    if (auto r = config_set(config, key, value, "--" + key); !r) return std::move(r).error();
  return config;
}

// First line of `qemu --version`: part of every snapshot's key.
std::string qemu_version(const std::string& qemu) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return "unknown";
  unique_fd r(p[0]), w(p[1]);
  SpawnOptions opts;
  opts.argv = {qemu, "--version"};
  opts.fds = {{1, w.get()}};
  auto proc = Process::spawn(opts);
  w.reset();
  if (!proc) return "unknown";
  auto out = read_all(r.get(), 4096, "qemu --version");
  proc->wait();
  if (!out) return "unknown";
  return out->substr(0, out->find('\n'));
}

// Under KVM a guest runs on the host's CPU model (-cpu host): its saved
// state holds that CPU's features, and only a host with the same model and
// flags may restore it. Under TCG the CPU is QEMU's own ("max"), which the
// QEMU version pins.
std::string snapshot_cpu(Accel accel) {
  if (accel != Accel::kvm) return "tcg max";
  auto text = read_file("/proc/cpuinfo", 4 << 20);
  if (!text) return "kvm host unknown";
  std::string cpu = "kvm host";
  std::istringstream in(*text);
  // The first processor's description: every core of a host is alike.
  for (std::string line; std::getline(in, line) && !line.empty();) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto name = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    if (name == "vendor_id" || name == "cpu family" || name == "model" || name == "model name" ||
        name == "stepping" || name == "flags")
      cpu += "\n" + line;
  }
  return cpu;
}

// The host side of every VM: its user, seccomp program, images (opened
// once, read-only), cgroups, and the records start-up recovery reads.
struct HostSide {
  std::optional<SpawnOptions::User> user;
  std::vector<sock_filter> seccomp;
  ImageSet images;
  unique_fd image_fds[3];
  unique_fd builder_fd;  // the package builder's root, if the images have one
  Cgroups cgroups;
};

Result<void> prepare_host(const Config& cfg, HostSide* h, VmHost* host) {
  auto seccomp = build_qemu_seccomp();
  if (!seccomp) return std::move(seccomp).error().context("QEMU seccomp filter");
  h->seccomp = std::move(*seccomp);
  auto images = load_images(cfg.images);
  if (!images) return std::move(images).error().context("images");
  h->images = std::move(*images);
  log_info("images verified in " + cfg.images + " (" + h->images.description + ")");
  const std::string* paths[] = {&h->images.kernel.path, &h->images.initrd.path, &h->images.rootfs.path};
  for (int i = 0; i < 3; ++i) {
    h->image_fds[i].reset(::open(paths[i]->c_str(), O_RDONLY | O_CLOEXEC));
    if (!h->image_fds[i]) return Error::sys("open", *paths[i]).context("images");
  }
  if (!h->images.builder.path.empty()) {
    h->builder_fd.reset(::open(h->images.builder.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!h->builder_fd) return Error::sys("open", h->images.builder.path).context("images");
  }
  h->cgroups = Cgroups::open({cfg.cgroup_root, cfg.cgroup_base, ::geteuid() == 0});
  if (h->cgroups.enabled() && h->cgroups.missing().empty())
    log_info(h->cgroups.status());
  else if (cfg.require_cgroup_limits)
    return Error::make(ErrorCode::invalid_argument,
                       h->cgroups.status() + "; refusing to start (require_cgroup_limits = on)");
  else
    log_warning(h->cgroups.status() + "; VMs are bounded by QEMU's -m and the guest's own limits only");

  // A daemon that died without cleaning up left its VMs' traces here.
  for (const std::string& dir : {cfg.state_dir, cfg.state_dir + "/vms"})
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Error::sys("mkdir", dir).context("state");
  auto recovered = recover_leftovers(cfg.state_dir + "/vms", h->cgroups);
  for (const auto& k : recovered.killed) log_warning("recovery: killed QEMU left running: " + k);
  if (!recovered.records.empty() || !recovered.cgroups.empty())
    log_warning("recovery: removed " + std::to_string(recovered.records.size()) + " VM records and " +
                std::to_string(recovered.cgroups.size()) + " cgroups left by an earlier daemon");

  host->kernel_fd = h->image_fds[0].get();
  host->initrd_fd = h->image_fds[1].get();
  host->rootfs_fd = h->image_fds[2].get();
  host->builder_fd = h->builder_fd.get();
  host->user = h->user;
  host->seccomp = &h->seccomp;
  host->cgroups = &h->cgroups;
  host->memory_overhead_mb = cfg.vm_memory_overhead_mb;
  host->pids_max = cfg.vm_pids_max;
  host->cpu_percent = cfg.vm_cpu_percent;
  host->records_dir = cfg.state_dir + "/vms";
  return ok();
}

// Boots one VM with KVM and waits for the agent's hello.
bool probe_boot(uv_loop_t* loop, const VmConfig& config, std::string* why) {
  bool done = false, ok = false;
  VmEvents ev;
  ev.ready = [&] { done = ok = true; };
  ev.failed = [&](Error e) {
    done = true;
    *why = e.message.substr(0, 300);
  };
  auto vm = Vm::start(loop, config, VmLaunch{}, std::move(ev));
  if (!vm) {
    *why = vm.error().message;
    return false;
  }
  while (!done) uv_run(loop, UV_RUN_ONCE);
  return ok;
}

AccelChoice pick_accelerator(uv_loop_t* loop, const Config& cfg, VmConfig* vm) {
  AccelChoice accel = choose_accel(cfg.accel, probe_host());
  if (accel.needs_probe_boot) {
    vm->base.accel = Accel::kvm;
    std::string why;
    if (probe_boot(loop, *vm, &why))
      accel.reason = "KVM probe boot succeeded";
    else
      accel = {Accel::tcg, false, "KVM probe boot failed (" + why + "); using TCG software emulation"};
  }
  vm->base.accel = accel.accel;
  if (accel.accel == Accel::tcg) {
    vm->base.tsc_khz = measure_tsc_khz();
    log_info("host TSC " + std::to_string(vm->base.tsc_khz) + " kHz passed to TCG guests");
    log_warning("accelerator tcg: " + accel.reason + "; VMs boot in seconds, not milliseconds");
  } else {
    log_info("accelerator kvm: " + accel.reason);
  }
  return accel;
}

// Snapshots depend on everything that shapes the guest's memory.
std::unique_ptr<SnapshotStore> open_snapshots(const Config& cfg, const HostSide& h, const VmSpec& base,
                                              const std::string& extra_ca_pem) {
  if (!cfg.snapshots) return nullptr;
  auto fingerprint = snapshot_fingerprint(
      {h.images.kernel.sha256, h.images.initrd.sha256, h.images.rootfs.sha256, qemu_version(cfg.qemu),
       std::string(accel_name(base.accel)), std::to_string(base.vcpus), std::to_string(base.tsc_khz),
       std::to_string(base.tcg_tb_size_mb), kernel_cmdline(base), std::to_string(proto::kProtocolVersion),
       sha256_hex(extra_ca_pem), qemu_machine(base), virtio_serial_device(), snapshot_cpu(base.accel)});
  auto store = std::make_unique<SnapshotStore>(cfg.state_dir + "/snapshots", fingerprint,
                                               uint64_t{cfg.snapshot_cache_mb} << 20);
  auto dropped = store->init();
  if (!dropped) {
    log_warning("snapshots off: " + dropped.error().describe());
    return nullptr;
  }
  for (const auto& d : *dropped) log_info("snapshot cache: removed " + d);
  log_info("snapshot cache in " + cfg.state_dir + "/snapshots: " + std::to_string(store->list().size()) + " snapshots");
  return store;
}

// The package layer cache: what a crash left and corrupt layers go now.
std::shared_ptr<LayerStore> open_layers(const Config& cfg) {
  auto store = std::make_shared<LayerStore>(cfg.state_dir + "/layers", uint64_t{cfg.layer_cache_mb} << 20);
  for (const auto& d : store->recover()) log_info("layer cache: removed " + d);
  log_info("layer cache in " + store->dir() + ": " + std::to_string(store->list().size()) + " layers");
  return store;
}

// The object store layers are shared through (F27), with its credentials
// read now: a file that cannot be read stops the start, as a bad key would.
Result<LayerShareOptions> layer_share_options(const Config& cfg) {
  LayerShareOptions o;
  auto url = parse_store_url(cfg.cache_store_url);
  if (!url) return std::move(url).error();
  o.store.url = std::move(*url);
  o.store.region = cfg.cache_store_region;
  o.store.timeout_ms = cfg.cache_store_timeout_ms;
  if (!cfg.cache_store_credentials.empty()) {
    auto c = read_store_credentials(cfg.cache_store_credentials);
    if (!c) return std::move(c).error();
    o.store.credentials = std::move(*c);
  }
  o.upload = cfg.cache_store_upload;
  o.max_image_bytes = uint64_t{cfg.cache_store_max_mb} << 20;
  return o;
}

// Connections and VMs each need descriptors: the soft limit goes to the
// hard one, and the connection limit must fit under it.
void raise_descriptor_limit(const Config& cfg) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < cfg.max_connections + 256)
    log_warning("only " + std::to_string(rl.rlim_cur) + " descriptors for " + std::to_string(cfg.max_connections) +
                " connections (max_connections) and the VMs; lower max_connections or raise LimitNOFILE");
}

void warn_unreachable_uids(const Config& cfg, const std::optional<gid_t>& socket_gid) {
  if (cfg.allowed_uids.empty()) return;
  log_warning("allowed_uids: the socket is mode 0660" +
              (socket_gid ? ", group " + cfg.socket_group : std::string(", owned by the daemon")) +
              "; a listed uid passes the access check but can only open the socket as a member of that group");
}

// systemd (Type=notify): a status line and watchdog pings from the loop.
// Without systemd these calls do nothing.
class Notifier {
 public:
  Notifier(uv_loop_t* loop, Manager& manager) : manager_(manager) {
    timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); });
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0) usec = 0;
    uint64_t every = usec ? std::max<uint64_t>(usec / 2000, 100) : 10'000;
    sd_notify(0, ("READY=1\n" + line()).c_str());
    uv_timer_start(timer_.get(), [](uv_timer_t* t) {
      if (auto* n = owner_of<Notifier>(t)) sd_notify(0, ("WATCHDOG=1\n" + n->line()).c_str());
    }, every, every);
  }
  void stop() { timer_.reset(); }

 private:
  std::string line() const {
    auto st = manager_.status();
    uint32_t ready = 0;
    for (auto& p : st.pool) ready += p.ready;
    return "STATUS=" + st.accelerator + ": " + std::to_string(st.vms) + "/" + std::to_string(st.max_vms) + " VMs, " +
           std::to_string(st.runs_active) + " running, " + std::to_string(st.runs_queued) + " queued, " +
           std::to_string(ready) + " warm";
  }
  Manager& manager_;
  UvHandle<uv_timer_t> timer_;
};

// Shutdown drains: no new connections or runs, running ones get the grace
// to finish, then every VM is gone and the replies are flushed.
class Shutdown {
 public:
  Shutdown(uv_loop_t* loop, std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
    for (auto* h : {&term_, &intr_}) {
      *h = UvHandle<uv_signal_t>::make(this, [&](uv_signal_t* s) { return uv_signal_init(loop, s); });
      uv_signal_start(h->get(), [](uv_signal_t* s, int signum) {
        auto* self = owner_of<Shutdown>(s);
        if (!self || self->started_) return;
        self->started_ = true;
        self->on_signal_(signum);
      }, h == &term_ ? SIGTERM : SIGINT);
    }
  }
  void stop() {
    term_.reset();
    intr_.reset();
  }

 private:
  std::function<void(int)> on_signal_;
  UvHandle<uv_signal_t> term_, intr_;
  bool started_ = false;
};

RuntimeFacts runtime_facts(const Config& cfg, const AccelChoice& accel, const HostSide& host_side) {
  RuntimeFacts facts;
  facts.accel = accel.accel;
  facts.accel_reason = accel.reason;
  facts.host_limits = host_side.cgroups.status();
  facts.daemon_uid = ::getuid();
  facts.host_memory_kb = meminfo_kb("MemTotal");
  facts.cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  facts.images = describe_images(host_side.images);
  auto socket_gid = lookup_group(cfg.socket_group);
  if (socket_gid)
    facts.socket_gid = *socket_gid;
  else
    log_warning("socket_group: " + socket_gid.error().message + "; only root and allowed_uids/allowed_gids may connect");
  warn_unreachable_uids(cfg, facts.socket_gid);
  return facts;
}

bool keep_only_needed_capabilities() {
  if (auto r = drop_capabilities(); !r) {
    log_error("dropping capabilities: " + r.error().describe());
    return false;
  }
  std::string kept;
  for (const auto& k : kept_capabilities()) kept += (kept.empty() ? "" : " ") + std::string(k.name);
  log_info("capabilities dropped; kept " + kept);
  return true;
}

// The bus is optional: without one the daemon still serves the socket.
std::unique_ptr<DbusService> open_bus(uv_loop_t* loop, const Config& cfg, Service& service) {
  if (cfg.dbus == "off") return nullptr;
  auto dbus = std::make_unique<DbusService>(loop, service);
  if (auto r = dbus->start(cfg.dbus); !r) {
    log_warning("D-Bus unavailable (" + r.error().message + "); serving the socket only");
    return nullptr;
  }
  log_info(std::string("D-Bus: ") + kBusName + " on " + cfg.dbus);
  return dbus;
}

// The operator's extra CAs: PEM certificates, bounded, read once at start.
Result<std::string> read_extra_cas(const std::string& path) {
  if (path.empty()) return std::string();
  auto pem = read_file(path, proto::kMaxTrustBytes);
  if (!pem) return std::move(pem).error().context("extra_ca_file");
  if (pem->find("-----BEGIN CERTIFICATE-----") == std::string::npos || pem->find('\0') != std::string::npos)
    return Error::make(ErrorCode::invalid_argument, "extra_ca_file: '" + path + "' holds no PEM certificate");
  return std::move(*pem);
}

VmConfig vm_config_from(const Config& cfg, const HostSide& host_side) {
  VmConfig vm;
  vm.base.qemu = cfg.qemu;
  vm.base.vcpus = cfg.vcpus;
  vm.base.tcg_tb_size_mb = cfg.tcg_tb_size_mb;
  vm.base.kernel = host_side.images.kernel.path;
  vm.base.initrd = host_side.images.initrd.path;
  vm.base.rootfs = host_side.images.rootfs.path;
  vm.base.acpi = host_side.images.kernel_acpi;
  vm.boot_timeout = std::chrono::milliseconds(cfg.boot_timeout_ms);
  vm.run_pids_max = cfg.pids_max;
  vm.net.resolver = cfg.network_resolver;
  for (const auto& r : cfg.network_allowed_ranges)
    if (auto c = parse_cidr(r)) vm.net.allowed_ranges.push_back(*c);
  vm.net.max_connections = cfg.network_max_connections;
  vm.net.connect_timeout = std::chrono::milliseconds(cfg.network_connect_timeout_ms);
  vm.net.idle_timeout = std::chrono::milliseconds(cfg.network_idle_timeout_ms);
  // Beside the control socket: sticky and writable by all, like /tmp, so
  // each user's private directory can be made as that user.
  vm.net.expose_dir = cfg.socket.substr(0, cfg.socket.rfind('/')) + "/expose";
  if (::mkdir(vm.net.expose_dir.c_str(), 01733) == 0 || errno == EEXIST) {
    struct stat st{};
    if (::lstat(vm.net.expose_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
      vm.net.expose_dir.clear();
    else
      ::chmod(vm.net.expose_dir.c_str(), 01733);
  } else {
    vm.net.expose_dir.clear();
  }
  return vm;
}

int run(int argc, char** argv) {
  // Uploads are held as 1 MiB chunks, up to the budgets' hundreds of MiB.
  // glibc raises its mmap threshold the first time such a block is freed,
  // and later ones then come from the heap, where freed memory stays
  // resident: a dropped upload burst left the daemon 90 MiB larger for
  // good. A fixed threshold (glibc's default) keeps every large buffer its
  // own mapping, returned to the system when freed.
  ::mallopt(M_MMAP_THRESHOLD, 128 << 10);
  // Descriptors inherited from whoever started the daemon are neither ours
  // nor QEMU's (a lock its starter holds, say): closed before anything opens.
  ::close_range(3, ~0U, 0);
  auto config = load_config(argc, argv);
  if (!config) {
    std::fprintf(stderr, "sandboxd: configuration: %s\n", config.error().message.c_str());
    return 2;
  }
  const Config& cfg = *config;
  set_log_level(cfg.log_level == "debug"     ? LogLevel::debug
                : cfg.log_level == "warning" ? LogLevel::warning
                : cfg.log_level == "error"   ? LogLevel::error
                                             : LogLevel::info);
  ::signal(SIGPIPE, SIG_IGN);
  const bool root = ::geteuid() == 0;
  raise_descriptor_limit(cfg);

  HostSide host_side;
  if (root) {
    auto user = lookup_user(cfg.qemu_user);
    if (!user) {
      std::fprintf(stderr, "sandboxd: configuration: qemu_user: %s\n", user.error().message.c_str());
      return 2;
    }
    host_side.user = std::move(*user);
  }
  VmHost vm_host;
  if (auto r = prepare_host(cfg, &host_side, &vm_host); !r) {
    log_error(r.error().describe());
    return 1;
  }
  VmConfig vm_config = vm_config_from(cfg, host_side);
  vm_config.host = vm_host;
  auto cas = read_extra_cas(cfg.extra_ca_file);
  if (!cas) {
    std::fprintf(stderr, "sandboxd: configuration: %s\n", cas.error().message.c_str());
    return 2;
  }
  vm_config.extra_ca_pem = std::move(*cas);

  uv_loop_t loop;
  uv_loop_init(&loop);
  AccelChoice accel = pick_accelerator(&loop, cfg, &vm_config);
  auto snapshots = open_snapshots(cfg, host_side, vm_config.base, vm_config.extra_ca_pem);

  RuntimeFacts facts = runtime_facts(cfg, accel, host_side);
  auto options = options_from(cfg, facts);
  if (!cfg.package_allowlist.empty()) {
    auto policy = load_package_allowlist(cfg.package_allowlist, options.service.packages);
    if (!policy) {
      log_error("package_allowlist: " + policy.error().describe());
      return 1;
    }
    options.service.packages = std::move(*policy);
  }
  if (!cfg.apt_keyring_file.empty()) {
    // An OpenPGP keyring holds a few keys: 256 KiB is far more than enough.
    auto keyring = read_file(cfg.apt_keyring_file, 256 << 10);
    if (!keyring) {
      log_error("apt_keyring_file: " + keyring.error().describe());
      return 1;
    }
    options.manager.builder.apt_keyring = std::move(*keyring);
  }
  options.manager.layer_store = open_layers(cfg);
  if (!cfg.cache_store_url.empty()) {
    auto share = layer_share_options(cfg);
    if (!share) {
      log_error("cache_store: " + share.error().describe());
      return 1;
    }
    log_info("package layers and snapshot templates shared through " + cfg.cache_store_url + " (" +
             (share->store.credentials.empty() ? "unsigned" : "signed") + " requests, " +
             (share->upload ? "uploads on" : "fetch only") + ")");
    options.manager.layer_remote = [share = *share](uv_loop_t* loop) -> std::unique_ptr<LayerRemote> {
      return std::make_unique<LayerShare>(loop, share);
    };
    // Snapshot templates go through the same store when this node makes them.
    options.manager.snapshot_remote = [share = std::move(*share)](uv_loop_t* loop) -> std::unique_ptr<SnapshotRemote> {
      return std::make_unique<SnapshotShare>(loop, share);
    };
  }
  options.manager.sessions_journal = cfg.state_dir + "/sessions";
  log_info("at most " + std::to_string(options.manager.max_vms) + " VMs, " +
           std::to_string(options.manager.limits.runs_per_uid) + " runs per uid; warm pool python=" +
           std::to_string(cfg.pool_python) + " javascript=" + std::to_string(cfg.pool_javascript) +
           " raw=" + std::to_string(cfg.pool_raw));

  QemuVmFactory factory(&loop, vm_config);
  auto manager = std::make_unique<Manager>(&loop, factory, snapshots.get(), options.manager);
  auto service = std::make_unique<Service>(*manager, options.service);
  auto server = std::make_unique<ControlServer>(&loop, *service, options.control);
  auto parent = cfg.socket.substr(0, cfg.socket.rfind('/'));
  if (!parent.empty()) ::mkdir(parent.c_str(), 0755);
  if (auto r = server->listen(cfg.socket, 0660, facts.socket_gid); !r) {
    log_error("control socket: " + r.error().describe());
    return 1;
  }
  log_info("listening on " + cfg.socket + " (mode 0660" + (facts.socket_gid ? ", group " + cfg.socket_group : "") + ")");
  // Set-up that needed root is done: keep only what starting QEMU needs.
  if (root && !keep_only_needed_capabilities()) return 1;
  manager->start();
  auto dbus = open_bus(&loop, cfg, *service);

  Notifier notifier(&loop, *manager);
  Shutdown shutdown(&loop, [&](int signum) {
    log_info(std::string("received ") + strsignal(signum) + "; draining " + std::to_string(manager->leases()) + " runs");
    sd_notify(0, "STOPPING=1");
    server->stop_listening();
    manager->drain(std::chrono::milliseconds(cfg.shutdown_grace_ms), [&] {
      notifier.stop();
      if (dbus) dbus->stop();
      server->close();
      shutdown.stop();
    });
  });

  uv_run(&loop, UV_RUN_DEFAULT);

  dbus.reset();
  server.reset();
  service.reset();
  manager.reset();
  notifier.stop();
  shutdown.stop();
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) log_warning("event loop closed with handles still open");
  log_info("stopped");
  return 0;
}

}  // namespace
}  // namespace sandbox::daemon

int main(int argc, char** argv) { return sandbox::daemon::run(argc, argv); }
