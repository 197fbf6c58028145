// sandbox-bench: measures sandboxd on this machine and prints the figures
// side by side with peers measured in the same run. Nothing is asserted:
// benchmarks report, tests check behaviour.
//
// usage: sandbox-bench [--images DIR] [--samples N] [--seconds S]
//        sandbox-bench --soak [--clients N] [--seconds S] [--images DIR]
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/framing.h"
#include <sandbox/limits.h>
#include "daemon/accel.h"
#include "daemon/images.h"
#include "common/process.h"
#include "daemon/qemu_argv.h"
#include "sandbox/client.h"
#include "bench/harness.h"
#include "bench/net.h"
#include "bench/packages.h"
#include "bench/soak.h"

using namespace sandbox;
using namespace sandbox::bench;

namespace {

// Host memory of idle VMs: RSS, and PSS, which shares the pages a VM maps
// with others (the images, QEMU's own text) among them.
struct Memory {
  Stats rss_mb, pss_mb;
  void add(pid_t p) {
    rss_mb.v.push_back(static_cast<double>(rss_kb(p)) / 1024.0);
    pss_mb.v.push_back(static_cast<double>(pss_kb(p)) / 1024.0);
  }
};

// How a QEMU process started: restored from a snapshot (-incoming), a
// snapshot template (RAM in a memory file, saved, then gone), or booted.
enum class Started { booted, restored, template_vm };
Started how_started(pid_t p) {
  std::ifstream in("/proc/" + std::to_string(p) + "/cmdline");
  std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (cmd.find("-incoming") != std::string::npos) return Started::restored;
  if (cmd.find("memory-backend-file") != std::string::npos) return Started::template_vm;
  return Started::booted;
}

RunRequest print1() {
  RunRequest r;
  r.language = Language::python;
  r.code = "print(1)";
  return r;
}

// A bare QEMU boot of the same images, timed to the agent's hello.
double plain_boot_ms(const daemon::ImageSet& images, daemon::Accel accel) {
  int sv[2], nv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  sandbox::unique_fd host(sv[0]), guest(sv[1]);
  // The network port too: every daemon VM has one, and an agent that does
  // not find it waits for it before its hello.
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, nv) != 0) return -1;
  sandbox::unique_fd net_host(nv[0]), net_guest(nv[1]);
  daemon::VmSpec spec;
  spec.qemu = "qemu-system-x86_64";
  spec.accel = accel;
  spec.kernel = images.kernel.path;
  spec.initrd = images.initrd.path;
  spec.rootfs = images.rootfs.path;
  spec.acpi = images.kernel_acpi;
  spec.tsc_khz = accel == daemon::Accel::tcg ? daemon::measure_tsc_khz() : 0;
  constexpr int kNetFd = 4;
  spec.net_fd = kNetFd;
  auto argv = daemon::qemu_argv(spec);
  if (!argv) return -1;
  auto start = Clock::now();
  auto p = Process::spawn({*argv, {{spec.agent_fd, guest.get()}, {kNetFd, net_guest.get()}}, true});
  if (!p) return -1;
  guest.reset();
  net_guest.reset();
  timeval tv{30, 0};
  ::setsockopt(host.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  FrameDecoder d(limits::kMaxFrameBytes);
  char buf[4096];
  while (!d.next()) {
    ssize_t n = ::recv(host.get(), buf, sizeof buf, 0);
    if (n <= 0) return -1;
    d.feed({buf, static_cast<size_t>(n)});
  }
  return ms_since(start);
}

}  // namespace

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: sandbox-bench [--images DIR] [--samples N] [--seconds S]\n"
               "       sandbox-bench --soak [--clients N] [--seconds S] [--images DIR]\n"
               "       sandbox-bench --network [--samples N] [--megabytes M] [--images DIR]\n"
               "       sandbox-bench --packages [--samples N] [--images DIR]\n"
               "\n"
               "Without --soak: print(1) latency (warm pool, cold boot, snapshot restore), sustained runs per\n"
               "second with 1, 4 and 16 clients, pool refill and memory per VM, next to peers measured in the\n"
               "same run (python3, bwrap, a plain QEMU boot). About five minutes on a 2-core machine.\n"
               "  --samples N   latency samples per figure (default 15)\n"
               "  --seconds S   length of each sustained-throughput level (default 15)\n"
               "\n"
               "With --soak: N client threads for S seconds against one private sandboxd, each mixing status\n"
               "calls, session execs and runs; served and failed counts per kind (by error code), latency\n"
               "p50/p95/p99 per kind, and the daemon's peak RSS and descriptors.\n"
               "  --clients N   client threads (default 100)\n"
               "  --seconds S   how long (default 60)\n"
               "\n"
               "With --network: connect latency and the throughput of one download through the network policy\n"
               "path (guest relay, channel, the daemon's checks and dial), next to the same on the host directly,\n"
               "against a server on loopback.\n"
               "  --megabytes M the download's size (default 50)\n"
               "\n"
               "With --packages: a package layer's cold build, then runs with the cached layer next to runs\n"
               "without packages, both restored from snapshots, against the source tree's loopback test index.\n"
               "\n"
               "  --images DIR  guest images (default: images/ beside bin/)\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string self = fs::canonical("/proc/self/exe").parent_path().string();
  std::string images = fs::path(self).parent_path().string() + "/images";
  int samples = 15;
  int seconds = 0;  // per mode's default unless given
  int clients = 100;
  bool soak = false, network = false, packages = false;
  int megabytes = 50;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") return usage(stdout), 0;
    if (a == "--soak" || a == "--network" || a == "--packages") {
      (a == "--soak" ? soak : a == "--network" ? network : packages) = true;
      continue;
    }
    bool known = a == "--images" || a == "--samples" || a == "--seconds" || a == "--clients" || a == "--megabytes";
    if (!known || i + 1 >= argc) {
      std::fprintf(stderr, "sandbox-bench: %s '%s'\n", known ? "missing value for" : "unknown option", a.c_str());
      return usage(stderr), 2;
    }
    std::string v = argv[++i];
    if (a == "--images") images = v;
    else if (a == "--samples") samples = std::max(3, std::atoi(v.c_str()));
    else if (a == "--seconds") seconds = std::max(3, std::atoi(v.c_str()));
    else if (a == "--megabytes") megabytes = std::max(1, std::atoi(v.c_str()));
    else clients = std::max(1, std::atoi(v.c_str()));
  }
  if (soak) return run_soak({self, images, clients, seconds ? seconds : 60});
  if (network) return run_network({self, images, samples, megabytes});
  if (packages) return run_packages({self, images, samples});
  if (seconds == 0) seconds = 15;
  auto image_set = daemon::load_images(images);
  if (!image_set) {
    std::fprintf(stderr, "sandbox-bench: %s\n", image_set.error().describe().c_str());
    return 1;
  }
  auto accel = daemon::choose_accel(daemon::Accel::automatic, daemon::probe_host());
  const char* accel_name = accel.accel == daemon::Accel::kvm ? "kvm" : "tcg";
  std::printf("sandbox-bench: %u CPUs, accelerator %s (%s)\n\n", std::thread::hardware_concurrency(), accel_name,
              accel.reason.c_str());
  std::fflush(stdout);

  // --- peers, measured now on this machine
  Stats py, bwrap, qemu;
  for (int i = 0; i < 10; ++i) {
    auto t = Clock::now();
    // Debian's interpreter by path: a PATH shim (pyenv and the like) would
    // time the shim, not Python.
    if (run_quiet({"/usr/bin/python3", "-c", "print(1)"}) == 0) py.v.push_back(ms_since(t));
    t = Clock::now();
    if (run_quiet({"bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc",
                   "/proc", "--tmpfs", "/tmp", "/usr/bin/python3", "-c", "print(1)"}) == 0)
      bwrap.v.push_back(ms_since(t));
  }
  for (int i = 0; i < 5; ++i)
    if (double ms = plain_boot_ms(*image_set, accel.accel); ms > 0) qemu.v.push_back(ms);

  // --- warm pool through libsandbox, and through the sandboxctl process
  Stats warm_lib, warm_ctl, exec_guest;
  Memory booted_mem, restored_mem;
  {
    Daemon d(self, images, {"--pool-python", "2", "--pool-javascript", "0", "--pool-raw", "0"});
    // The first pool VMs boot: there is no snapshot yet.
    if (d.wait_pool(Language::python, 2))
      for (pid_t p : d.children())
        if (how_started(p) == Started::booted) booted_mem.add(p);
    for (int i = 0; i < samples; ++i) {
      if (!d.wait_pool(Language::python, 1)) break;
      auto t = Clock::now();
      auto r = d.client().run(print1());
      double ms = ms_since(t);
      if (r.ok() && r->warm_pool_hit) {
        warm_lib.v.push_back(ms);
        exec_guest.v.push_back(static_cast<double>(r->execution_time_ms));
      }
    }
    for (int i = 0; i < std::max(3, samples / 2); ++i) {
      if (!d.wait_pool(Language::python, 1)) break;
      auto t = Clock::now();
      if (run_quiet({self + "/sandboxctl", "run", "--socket", d.socket(), "print(1)"}) == 0)
        warm_ctl.v.push_back(ms_since(t));
    }
  }

  // --- cold runs: no pool; booted, then restored from a snapshot. Each
  // is timed to its first output and to its result.
  Stats cold, cold_first, restored, restored_first;
  auto timed_run = [](const Daemon& d, Stats& total, Stats& first, const char* want_start) {
    auto t = Clock::now();
    double first_ms = -1;
    auto r = d.client().run(print1(), [&](Stream, std::string_view) {
      if (first_ms < 0) first_ms = ms_since(t);
    });
    double ms = ms_since(t);
    if (!r.ok() || (want_start && r->vm_start != want_start)) return;
    total.v.push_back(ms);
    if (first_ms >= 0) first.v.push_back(first_ms);
  };
  {
    Daemon d(self, images, {"--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0", "--snapshots", "off"});
    for (int i = 0; i < std::max(3, samples / 3); ++i) timed_run(d, cold, cold_first, nullptr);
  }
  {
    Daemon d(self, images, {"--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0", "--snapshots", "on"});
    (void)d.client().run(print1());  // boots, and makes the snapshot behind it
    for (int i = 0; i < 600 && !d.children().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (int i = 0; i < std::max(3, samples / 3); ++i) timed_run(d, restored, restored_first, "snapshot");
  }

  // --- pool refill: time from a warm VM taken to the pool full again
  Stats refill_boot, refill_restore;
  // ms per VM when a drained pool of four refills: measured below, with
  // the memory of restored VMs, on the daemon that has such a pool.
  Stats refill_burst;
  for (bool restore : {false, true}) {
    Daemon d(self, images, {"--pool-python", "1", "--pool-javascript", "0", "--pool-raw", "0", "--snapshots", "on",
                            "--pool-restore", restore ? "on" : "off"});
    Stats& s = restore ? refill_restore : refill_boot;
    (void)d.client().run(print1());  // the first boot makes the snapshot
    for (int i = 0; i < 600 && d.children().size() > 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (int i = 0; i < std::max(3, samples / 3); ++i) {
      if (!d.wait_pool(Language::python, 1)) break;
      // The warm VM is taken as the run starts: the clock starts there.
      auto t = Clock::now();
      auto r = d.client().run(print1());
      if (d.wait_pool(Language::python, 1) && r.ok() && r->warm_pool_hit) s.v.push_back(ms_since(t));
    }
  }

  // --- memory of restored VMs side by side: what they share (the
  // snapshot's memory file, QEMU's text) is divided among them in PSS. The
  // first pool VMs boot; runs use them up until every one is a restore.
  {
    constexpr uint32_t kVms = 4;
    Daemon d(self, images, {"--pool-python", std::to_string(kVms), "--pool-javascript", "0", "--pool-raw", "0",
                            "--snapshots", "on", "--pool-restore", "on"});
    auto restored_vms = [&] {
      size_t n = 0;
      for (pid_t p : d.children()) n += how_started(p) == Started::restored;
      return n;
    };
    for (int i = 0; i < 20 && d.wait_pool(Language::python, kVms) && restored_vms() < kVms; ++i)
      (void)d.client().run(print1());
    if (d.wait_pool(Language::python, kVms))
      for (pid_t p : d.children())
        if (how_started(p) == Started::restored) restored_mem.add(p);
    // A burst: the whole pool taken by as many runs at once, timed until
    // it is full again, refilled as many at a time as the daemon does by
    // default. This is the refill rate a burst of callers sees (its four
    // runs share the CPUs with the refills); the one-VM figure above is
    // its latency.
    for (int i = 0; i < std::max(3, samples / 5); ++i) {
      if (!d.wait_pool(Language::python, kVms)) {
        std::fprintf(stderr, "sandbox-bench: the pool of %u did not fill; no refill burst measured\n", kVms);
        break;
      }
      std::atomic<uint32_t> hits{0};
      auto t = Clock::now();
      std::vector<std::thread> burst;
      for (uint32_t k = 0; k < kVms; ++k)
        burst.emplace_back([&] {
          auto r = d.client().run(print1());
          if (r.ok() && r->warm_pool_hit) ++hits;
        });
      for (auto& b : burst) b.join();
      if (hits != kVms)
        std::fprintf(stderr, "sandbox-bench: a refill burst had %u of %u pool hits; not counted\n", hits.load(), kVms);
      else if (d.wait_pool(Language::python, kVms))
        refill_burst.v.push_back(ms_since(t) / kVms);
    }
  }

  // --- sustained throughput, a fresh VM per run, default pool
  struct Level {
    int clients;
    double rps;
    uint64_t runs, failures, hits;
  };
  std::vector<Level> levels;
  for (int clients : {1, 4, 16}) {
    // One uid drives every client here, so the per-uid limit is lifted.
    Daemon d(self, images, {"--max-runs-per-uid", "1000"});
    if (!d.wait_settled())
      std::fprintf(stderr, "sandbox-bench: the daemon did not settle in time; %d clients measure its start-up too\n",
                   clients);
    std::atomic<uint64_t> runs{0}, failures{0}, hits{0};
    auto until = Clock::now() + std::chrono::seconds(seconds);
    std::vector<std::thread> threads;
    auto start = Clock::now();
    for (int c = 0; c < clients; ++c)
      threads.emplace_back([&] {
        while (Clock::now() < until) {
          auto r = d.client().run(print1());
          if (!r.ok()) {
            ++failures;
            // Capacity is backpressure: back off instead of spinning.
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
          }
          ++runs;
          if (r->warm_pool_hit) ++hits;
        }
      });
    for (auto& t : threads) t.join();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    levels.push_back({clients, static_cast<double>(runs) / secs, runs, failures, hits});
  }

  // --- report
  double bw = bwrap.median();
  auto ratio = [&](double ms) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2fx bwrap", bw > 0 ? ms / bw : 0.0);
    return std::string(b);
  };
  std::printf("%-52s %12s %12s %12s  %s\n", "measurement (print(1) end to end)", "p50", "p95", "p99", "vs peer");
  auto row = [&](const char* name, const Stats& s, bool compare = true) {
    if (s.v.empty()) {
      std::printf("%-52s %12s\n", name, "n/a");
      return;
    }
    std::printf("%-52s %12s %12s %12s  %s\n", name, fmt(s.median()).c_str(), fmt(s.pct(95)).c_str(),
                fmt(s.pct(99)).c_str(), compare ? ratio(s.median()).c_str() : "");
  };
  row("warm pool, libsandbox", warm_lib);
  row("  of which in the guest (execution_time_ms)", exec_guest, false);
  row("warm pool, sandboxctl process", warm_ctl);
  row("cold boot (no pool, no snapshot), libsandbox", cold);
  row("  to its first output", cold_first);
  row("snapshot restore (no pool), libsandbox", restored);
  row("  to its first output", restored_first);
  row("peer: python3 -c (no sandbox)", py);
  row("peer: bwrap --unshare-all python3 -c", bwrap, false);
  row("peer: plain qemu-system-x86_64 boot to agent hello", qemu);
  std::printf("\n%-52s %12s %12s %12s %12s\n", "sustained, fresh VM per run", "runs/s", "runs", "failures",
              "pool hits");
  for (auto& l : levels) {
    char name[64];
    std::snprintf(name, sizeof name, "%d concurrent clients for %d s", l.clients, seconds);
    std::printf("%-52s %12.2f %12llu %12llu %11.0f%%\n", name, l.rps, static_cast<unsigned long long>(l.runs),
                static_cast<unsigned long long>(l.failures),
                l.runs ? 100.0 * static_cast<double>(l.hits) / static_cast<double>(l.runs) : 0.0);
  }
  auto rate = [](const Stats& s) { return s.v.empty() ? 0.0 : 1000.0 / s.median(); };
  std::printf("\n%-52s %12s %12s\n", "warm pool refill (python)", "median", "VMs/s");
  std::printf("%-52s %12s %12.2f\n", "by boot, one VM", fmt(refill_boot.median()).c_str(), rate(refill_boot));
  std::printf("%-52s %12s %12.2f\n", "by restore (+ TCG warm-up run), one VM", fmt(refill_restore.median()).c_str(),
              rate(refill_restore));
  std::printf("%-52s %12s %12.2f\n", "by restore, pool of 4 drained at once (per VM)", fmt(refill_burst.median()).c_str(),
              rate(refill_burst));
  auto mem_row = [](const char* name, const Memory& m) {
    if (m.rss_mb.v.empty()) return std::printf("%-52s %12s\n", name, "n/a"), void();
    std::printf("%-52s %9.1f MB %9.1f MB %12zu\n", name, m.rss_mb.median(), m.pss_mb.median(), m.rss_mb.v.size());
  };
  std::printf("\n%-52s %12s %12s %12s\n", "host memory per idle warm VM (python, 256 MB guest)", "RSS", "PSS", "VMs");
  mem_row("booted", booted_mem);
  mem_row("restored from a snapshot", restored_mem);
  std::printf("accelerator: %s%s\n", accel_name,
              accel.accel == daemon::Accel::tcg ? " (software emulation; KVM hosts are much faster)" : "");

  // --- the goals, each as the ratio or figure above against its target
  std::printf("\n%-52s %12s %12s  %s\n", "goal", "measured", "target", "");
  auto goal = [](const char* name, double v, double target, bool at_most, const char* unit) {
    if (v <= 0) return std::printf("%-52s %12s %12s\n", name, "n/a", ""), void();
    bool met = at_most ? v <= target : v >= target;
    char m[32], t[32];
    std::snprintf(m, sizeof m, "%.2f%s", v, unit);
    std::snprintf(t, sizeof t, "%s %.2f%s", at_most ? "<=" : ">=", target, unit);
    std::printf("%-52s %12s %12s  %s\n", name, m, t, met ? "met" : "not met");
  };
  auto over = [&](const Stats& s) { return bw > 0 && !s.v.empty() ? s.median() / bw : 0.0; };
  goal("warm run via libsandbox / bwrap", over(warm_lib), 1.0, true, "x");
  goal("warm run via sandboxctl / bwrap", over(warm_ctl), 1.5, true, "x");
  goal("cold boot to first output", cold_first.v.empty() ? 0 : cold_first.median(), 1000, true, " ms");
  goal("host RSS per idle warm VM, restored", restored_mem.rss_mb.v.empty() ? 0 : restored_mem.rss_mb.median(), 60,
       true, " MB");
  goal("host RSS per idle warm VM, booted", booted_mem.rss_mb.v.empty() ? 0 : booted_mem.rss_mb.median(), 60, true,
       " MB");
  goal("snapshot-restored cold run / booted cold run",
       cold.v.empty() || restored.v.empty() ? 0 : restored.median() / cold.median(), 0.25, true, "x");
  goal("sustained runs/s, 16 clients", levels.empty() ? 0 : levels.back().rps, 4, false, "");
  if (!levels.empty()) {
    auto& l = levels.back();
    double asked = static_cast<double>(l.runs + l.failures);
    goal("requests served, 16 clients", asked > 0 ? 100.0 * static_cast<double>(l.runs) / asked : 0, 100, false, "%");
  }
  // VMs/s as a pool refills after a burst; one VM's latency is a rate only
  // when refills go one at a time, so it is shown against the same line.
  goal("pool refill by restore, VMs/s (drained pool)", rate(refill_burst), 5, false, "");
  goal("pool refill by restore, VMs/s (one VM alone)", rate(refill_restore), 5, false, "");
  return 0;
}
