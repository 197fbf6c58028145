// sandboxd: the host service. Reads configuration, verifies the guest
// images, picks the accelerator, listens on the control socket and runs
// code in disposable microVMs until SIGTERM or SIGINT.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "common/sysinfo.h"
#include "daemon/accel.h"
#include "daemon/config.h"
#include "daemon/control_socket.h"
#include "daemon/dbus.h"
#include "daemon/images.h"
#include "daemon/log.h"
#include "daemon/manager.h"
#include "daemon/privileges.h"
#include "daemon/qemu_seccomp.h"
#include "daemon/recovery.h"
#include "daemon/snapshots.h"
#include "daemon/vm.h"

#include <fcntl.h>

extern char** environ;

namespace sandbox::daemon {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: sandboxd [--config FILE] [--KEY VALUE]...\n"
               "Runs untrusted code in disposable QEMU microVMs; clients talk to it through\n"
               "the control socket (sandboxctl, libsandbox).\n\n"
               "Configuration comes from %s (or --config FILE), then SANDBOXD_<KEY>\n"
               "environment variables, then --KEY VALUE flags ('-' and '_' are alike).\n\nKeys:\n",
               std::string(kDefaultConfigPath).c_str());
  for (const auto& [key, help] : config_keys()) std::fprintf(out, "  --%-18s %s\n", key.c_str(), help.c_str());
  std::fprintf(out,
               "\n  --config FILE        configuration file\n"
               "  --print-config       a configuration file with every key and its default\n"
               "  --help               this text\n");
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
  std::ifstream in(config_path);
  if (in) {
    std::stringstream text;
    text << in.rdbuf();
    if (auto r = config_parse(config, text.str(), config_path); !r) return std::move(r).error();
  } else if (explicit_config) {
    return Error::sys("open", config_path);
  }
  if (auto r = config_apply_env(config, environ); !r) return std::move(r).error();
  for (const auto& [key, value] : flags)
    if (auto r = config_set(config, key, value, "--" + key); !r) return std::move(r).error();
  return config;
}

// As many VMs as three quarters of host memory holds, at the pool's size
// plus QEMU's own overhead, and no more than four per CPU: a VM that gets no
// CPU misses its boot deadline. Under TCG every VM needs far more CPU.
uint32_t default_max_vms(uint32_t vm_mb, Accel accel) {
  uint64_t total_kb = meminfo_kb("MemTotal");
  uint64_t per_vm_mb = vm_mb + 64;
  uint64_t n = total_kb / 1024 * 3 / 4 / per_vm_mb;
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  uint64_t per_cpu = accel == Accel::kvm ? 16 : 4;
  if (cpus > 0) n = std::min<uint64_t>(n, static_cast<uint64_t>(cpus) * per_cpu);
  return static_cast<uint32_t>(std::clamp<uint64_t>(n, 1, 1000));
}

// First line of `qemu --version`: part of every snapshot's key.
std::string qemu_version(const std::string& qemu) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return "unknown";
  unique_fd r(p[0]), w(p[1]);
  auto proc = Process::spawn({{qemu, "--version"}, {{1, w.get()}}, true});
  w.reset();
  if (!proc) return "unknown";
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(r.get(), buf, sizeof buf)) > 0 && out.size() < 4096) out.append(buf, static_cast<size_t>(n));
  proc->wait();
  return out.substr(0, out.find('\n'));
}

// Boots one VM with KVM and waits for the agent's hello.
bool probe_boot(uv_loop_t* loop, VmSpec spec, std::chrono::milliseconds timeout, std::string* why) {
  bool done = false, ok = false;
  Vm::Events ev;
  ev.ready = [&] { done = ok = true; };
  ev.failed = [&](Error e) {
    done = true;
    *why = e.message.substr(0, 300);
  };
  auto vm = Vm::start(loop, std::move(spec), timeout, std::move(ev));
  if (!vm) {
    *why = vm.error().message;
    return false;
  }
  while (!done) uv_run(loop, UV_RUN_ONCE);
  return ok;
}

int run(int argc, char** argv) {
  auto config = load_config(argc, argv);
  if (!config) {
    std::fprintf(stderr, "sandboxd: configuration: %s\n", config.error().message.c_str());
    return 2;
  }
  const Config& cfg = *config;
  set_log_level(cfg.log_level == "debug" ? LogLevel::debug
                : cfg.log_level == "warning" ? LogLevel::warning
                : cfg.log_level == "error" ? LogLevel::error
                                           : LogLevel::info);
  ::signal(SIGPIPE, SIG_IGN);
  const bool root = ::geteuid() == 0;

  // Everything each QEMU shares on the host side.
  VmHost host;
  host.memory_overhead_mb = cfg.vm_memory_overhead_mb;
  host.pids_max = cfg.vm_pids_max;
  host.cpu_percent = cfg.vm_cpu_percent;
  if (root) {
    auto user = lookup_user(cfg.qemu_user);
    if (!user) {
      std::fprintf(stderr, "sandboxd: configuration: qemu_user: %s\n", user.error().message.c_str());
      return 2;
    }
    host.user = std::move(*user);
  }
  auto seccomp = build_qemu_seccomp();
  if (!seccomp) {
    log_error("QEMU seccomp filter: " + seccomp.error().describe());
    return 1;
  }
  host.seccomp = &*seccomp;

  auto images = load_images(cfg.images);
  if (!images) {
    log_error("images: " + images.error().describe());
    return 1;
  }
  log_info("images verified in " + cfg.images + " (" + images->description + ")");
  // Opened once, read-only; every QEMU inherits these instead of a path.
  unique_fd image_fds[3];
  for (auto [i, path] : {std::pair{0, &images->kernel.path}, {1, &images->initrd.path}, {2, &images->rootfs.path}}) {
    image_fds[i].reset(::open(path->c_str(), O_RDONLY | O_CLOEXEC));
    if (!image_fds[i]) {
      log_error("images: " + Error::sys("open", *path).describe());
      return 1;
    }
  }
  host.kernel_fd = image_fds[0].get();
  host.initrd_fd = image_fds[1].get();
  host.rootfs_fd = image_fds[2].get();

  // Host-side limits: reported once here and by `sandboxctl status`.
  Cgroups cgroups = Cgroups::open({cfg.cgroup_root, cfg.cgroup_base, root});
  if (cgroups.enabled() && cgroups.missing().empty()) {
    log_info(cgroups.status());
  } else if (cfg.require_cgroup_limits) {
    log_error(cgroups.status() + "; refusing to start (require_cgroup_limits = on)");
    return 1;
  } else {
    log_warning(cgroups.status() + "; VMs are bounded by QEMU's -m and the guest's own limits only");
  }
  host.cgroups = &cgroups;

  // A daemon that died without cleaning up left its VMs' traces here.
  host.records_dir = cfg.state_dir + "/vms";
  ::mkdir(cfg.state_dir.c_str(), 0700);
  if (::mkdir(host.records_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    log_error("state: " + Error::sys("mkdir", host.records_dir).describe());
    return 1;
  }
  auto recovered = recover_leftovers(host.records_dir, cgroups);
  for (const auto& k : recovered.killed) log_warning("recovery: killed QEMU left running: " + k);
  if (!recovered.records.empty() || !recovered.cgroups.empty())
    log_warning("recovery: removed " + std::to_string(recovered.records.size()) + " VM records and " +
                std::to_string(recovered.cgroups.size()) + " cgroups left by an earlier daemon");

  uv_loop_t loop;
  uv_loop_init(&loop);

  VmSpec spec;
  spec.qemu = cfg.qemu;
  spec.vcpus = cfg.vcpus;
  spec.tcg_tb_size_mb = cfg.tcg_tb_size_mb;
  spec.kernel = images->kernel.path;
  spec.initrd = images->initrd.path;
  spec.rootfs = images->rootfs.path;
  spec.memory_mb = 256;
  spec.host = &host;

  AccelChoice accel = choose_accel(cfg.accel, probe_host());
  if (accel.needs_probe_boot) {
    spec.accel = Accel::kvm;
    std::string why;
    if (probe_boot(&loop, spec, std::chrono::milliseconds(cfg.boot_timeout_ms), &why)) {
      accel.reason = "KVM probe boot succeeded";
    } else {
      accel = {Accel::tcg, false, "KVM probe boot failed (" + why + "); using TCG software emulation"};
    }
  }
  spec.accel = accel.accel;
  if (accel.accel == Accel::tcg) {
    spec.tsc_khz = measure_tsc_khz();
    log_info("host TSC " + std::to_string(spec.tsc_khz) + " kHz passed to TCG guests");
  }
  if (accel.accel == Accel::tcg)
    log_warning("accelerator tcg: " + accel.reason + "; VMs boot in seconds, not milliseconds");
  else
    log_info("accelerator kvm: " + accel.reason);

  // Snapshots depend on everything that shapes the guest's memory.
  std::unique_ptr<SnapshotStore> snapshots;
  if (cfg.snapshots) {
    auto fingerprint = snapshot_fingerprint(
        {images->kernel.sha256, images->initrd.sha256, images->rootfs.sha256, qemu_version(cfg.qemu),
         std::string(accel_name(spec.accel)), std::to_string(spec.vcpus), std::to_string(spec.tsc_khz),
         std::to_string(spec.tcg_tb_size_mb), kKernelCmdline, std::to_string(proto::kProtocolVersion)});
    snapshots = std::make_unique<SnapshotStore>(cfg.state_dir + "/snapshots", fingerprint,
                                                uint64_t{cfg.snapshot_cache_mb} << 20);
    auto dropped = snapshots->init();
    if (!dropped) {
      log_warning("snapshots off: " + dropped.error().describe());
      snapshots.reset();
    } else {
      for (const auto& d : *dropped) log_info("snapshot cache: removed " + d);
      log_info("snapshot cache in " + cfg.state_dir + "/snapshots: " + std::to_string(snapshots->list().size()) +
               " snapshots");
    }
  }

  ManagerOptions mopts;
  mopts.snapshots = snapshots.get();
  mopts.pool_restore = cfg.pool_restore;
  mopts.version = PROJECT_VERSION;
  mopts.accel_reason = accel.reason;
  mopts.host_limits = cgroups.status();
  mopts.vm = spec;
  mopts.boot_timeout = std::chrono::milliseconds(cfg.boot_timeout_ms);
  mopts.boot_retries = cfg.boot_retries;
  mopts.kill_slack = std::chrono::milliseconds(cfg.kill_slack_ms);
  mopts.kill_grace = std::chrono::milliseconds(cfg.kill_grace_ms);
  mopts.pids_max = cfg.pids_max;
  mopts.max_vms = cfg.max_concurrent_vms ? cfg.max_concurrent_vms : default_max_vms(cfg.pool_memory_mb, spec.accel);
  mopts.max_runs_per_uid = cfg.max_runs_per_uid ? cfg.max_runs_per_uid : std::max(1u, mopts.max_vms * 3 / 4);
  mopts.queue_timeout = std::chrono::milliseconds(cfg.queue_timeout_ms);
  mopts.max_sessions_per_uid = cfg.max_sessions_per_uid;
  mopts.session_idle_timeout_ms = cfg.session_idle_timeout_ms;
  mopts.pool_size = {cfg.pool_python, cfg.pool_javascript, cfg.pool_raw};
  mopts.pool_memory_mb = cfg.pool_memory_mb;
  mopts.pool_refill_concurrency = cfg.pool_refill_concurrency;
  mopts.pool_max_idle = std::chrono::milliseconds(cfg.pool_max_idle_ms);
  mopts.pool_health_interval = std::chrono::milliseconds(cfg.pool_health_interval_ms);
  log_info("at most " + std::to_string(mopts.max_vms) + " VMs, " + std::to_string(mopts.max_runs_per_uid) +
           " runs per uid; warm pool python=" + std::to_string(cfg.pool_python) +
           " javascript=" + std::to_string(cfg.pool_javascript) + " raw=" + std::to_string(cfg.pool_raw));
  auto manager = std::make_unique<Manager>(&loop, mopts);

  AccessPolicy policy{cfg.allowed_uids, cfg.allowed_gids, ::getuid()};
  // Members of the socket's group may connect, by file mode and by policy.
  auto socket_gid = lookup_group(cfg.socket_group);
  if (socket_gid)
    policy.allowed_gids.push_back(*socket_gid);
  else
    log_warning("socket_group: " + socket_gid.error().message + "; only root and allowed_uids/allowed_gids may connect");
  auto server = std::make_unique<ControlServer>(&loop, *manager, policy);
  auto parent = cfg.socket.substr(0, cfg.socket.rfind('/'));
  if (!parent.empty()) ::mkdir(parent.c_str(), 0755);
  if (auto r = server->listen(cfg.socket, 0660); !r) {
    log_error("control socket: " + r.error().describe());
    return 1;
  }
  if (socket_gid && ::chown(cfg.socket.c_str(), static_cast<uid_t>(-1), *socket_gid) != 0) {
    log_error("control socket: " + Error::sys("chown", cfg.socket).describe());
    return 1;
  }
  log_info("listening on " + cfg.socket + " (mode 0660" + (socket_gid ? ", group " + cfg.socket_group : "") + ")");
  // Set-up that needed root is done: keep only what starting QEMU needs.
  if (root) {
    if (auto r = drop_capabilities(); !r) {
      log_error("dropping capabilities: " + r.error().describe());
      return 1;
    }
    std::string kept;
    for (const auto& k : kept_capabilities()) kept += (kept.empty() ? "" : " ") + std::string(k.name);
    log_info("capabilities dropped; kept " + kept);
  }
  manager->start();

  // The bus is optional: without one the daemon still serves the socket.
  std::unique_ptr<DbusService> dbus;
  if (cfg.dbus != "off") {
    dbus = std::make_unique<DbusService>(&loop, *manager, policy);
    if (auto r = dbus->start(cfg.dbus); r) {
      log_info(std::string("D-Bus: ") + kBusName + " on " + cfg.dbus);
    } else {
      log_warning("D-Bus unavailable (" + r.error().message + "); serving the socket only");
      dbus.reset();
    }
  }

  // systemd (Type=notify): ready once the socket listens and the images are
  // verified; a status line and watchdog pings from the loop. Without
  // systemd these calls do nothing.
  auto status_line = [&] {
    auto st = manager->status();
    uint32_t ready = 0;
    for (auto& p : st.pool) ready += p.ready;
    return "STATUS=" + st.accelerator + ": " + std::to_string(st.vms) + "/" + std::to_string(st.max_vms) + " VMs, " +
           std::to_string(st.runs_active) + " running, " + std::to_string(st.runs_queued) + " queued, " +
           std::to_string(ready) + " warm";
  };
  sd_notify(0, ("READY=1\n" + status_line()).c_str());
  uint64_t watchdog_usec = 0;
  if (sd_watchdog_enabled(0, &watchdog_usec) <= 0) watchdog_usec = 0;
  struct Notify {
    std::function<std::string()> status;
    uv_timer_t timer;
  } notify{status_line, {}};
  uv_timer_init(&loop, &notify.timer);
  notify.timer.data = &notify;
  uint64_t every_ms = watchdog_usec ? std::max<uint64_t>(watchdog_usec / 2000, 100) : 10'000;
  uv_timer_start(&notify.timer, [](uv_timer_t* t) {
    auto* n = static_cast<Notify*>(t->data);
    sd_notify(0, ("WATCHDOG=1\n" + n->status()).c_str());
  }, every_ms, every_ms);

  // Shutdown drains: no new connections or runs, running ones get the
  // grace to finish, then every VM is gone and the replies are flushed.
  struct Stop {
    ControlServer* server;
    Manager* manager;
    DbusService* dbus;
    uv_timer_t* notify;
    std::chrono::milliseconds grace;
    uv_signal_t term, intr;
  } stop{server.get(), manager.get(), dbus.get(), &notify.timer, std::chrono::milliseconds(cfg.shutdown_grace_ms), {}, {}};
  auto on_signal = [](uv_signal_t* s, int signum) {
    auto* st = static_cast<Stop*>(s->data);
    if (st->manager->draining()) return;
    log_info(std::string("received ") + strsignal(signum) + "; draining " +
             std::to_string(st->manager->active_runs()) + " runs");
    sd_notify(0, "STOPPING=1");
    st->server->stop_listening();
    st->manager->drain(st->grace, [st] {
      uv_timer_stop(st->notify);
      if (st->dbus) st->dbus->stop();
      st->server->close();
      uv_signal_stop(&st->term);
      uv_signal_stop(&st->intr);
    });
  };
  for (auto [h, sig] : {std::pair{&stop.term, SIGTERM}, std::pair{&stop.intr, SIGINT}}) {
    uv_signal_init(&loop, h);
    h->data = &stop;
    uv_signal_start(h, on_signal, sig);
  }

  uv_run(&loop, UV_RUN_DEFAULT);

  dbus.reset();
  server.reset();
  manager.reset();
  uv_close(reinterpret_cast<uv_handle_t*>(&notify.timer), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&stop.term), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&stop.intr), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) log_warning("event loop closed with handles still open");
  log_info("stopped");
  return 0;
}

}  // namespace
}  // namespace sandbox::daemon

int main(int argc, char** argv) { return sandbox::daemon::run(argc, argv); }
