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
#include "bench/soak.h"

using namespace sandbox;
using namespace sandbox::bench;

namespace {

RunRequest print1() {
  RunRequest r;
  r.language = Language::python;
  r.code = "print(1)";
  return r;
}

// A bare QEMU boot of the same images, timed to the agent's hello.
double plain_boot_ms(const daemon::ImageSet& images, daemon::Accel accel) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  sandbox::unique_fd host(sv[0]), guest(sv[1]);
  daemon::VmSpec spec;
  spec.qemu = "qemu-system-x86_64";
  spec.accel = accel;
  spec.kernel = images.kernel.path;
  spec.initrd = images.initrd.path;
  spec.rootfs = images.rootfs.path;
  spec.acpi = images.kernel_acpi;
  spec.tsc_khz = accel == daemon::Accel::tcg ? daemon::measure_tsc_khz() : 0;
  auto argv = daemon::qemu_argv(spec);
  if (!argv) return -1;
  auto start = Clock::now();
  auto p = Process::spawn({*argv, {{3, guest.get()}}, true});
  if (!p) return -1;
  guest.reset();
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
               "  --images DIR  guest images (default: images/ beside bin/)\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string self = fs::canonical("/proc/self/exe").parent_path().string();
  std::string images = fs::path(self).parent_path().string() + "/images";
  int samples = 15;
  int seconds = 0;  // per mode's default unless given
  int clients = 100;
  bool soak = false, network = false;
  int megabytes = 50;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") return usage(stdout), 0;
    if (a == "--soak" || a == "--network") {
      (a == "--soak" ? soak : network) = true;
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
  uint64_t idle_rss_kb = 0;
  size_t idle_vms = 0;
  {
    Daemon d(self, images, {"--pool-python", "2", "--pool-javascript", "0", "--pool-raw", "0"});
    if (d.wait_pool(Language::python, 2)) {
      for (pid_t p : d.children()) idle_rss_kb += rss_kb(p), ++idle_vms;
    }
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

  // --- cold runs: no pool; booted, then restored from a snapshot
  Stats cold, restored;
  {
    Daemon d(self, images, {"--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0", "--snapshots", "off"});
    for (int i = 0; i < std::max(3, samples / 3); ++i) {
      auto t = Clock::now();
      auto r = d.client().run(print1());
      if (r.ok()) cold.v.push_back(ms_since(t));
    }
  }
  {
    Daemon d(self, images, {"--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0", "--snapshots", "on"});
    (void)d.client().run(print1());  // boots, and makes the snapshot behind it
    for (int i = 0; i < 600 && !d.children().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (int i = 0; i < std::max(3, samples / 3); ++i) {
      auto t = Clock::now();
      auto r = d.client().run(print1());
      if (r.ok() && r->vm_start == "snapshot") restored.v.push_back(ms_since(t));
    }
  }

  // --- pool refill: time from a warm VM taken to the pool full again
  Stats refill_boot, refill_restore;
  uint64_t restored_rss_kb = 0;
  for (bool restore : {false, true}) {
    Daemon d(self, images, {"--pool-python", "1", "--pool-javascript", "0", "--pool-raw", "0", "--snapshots", "on",
                            "--pool-restore", restore ? "on" : "off"});
    Stats& s = restore ? refill_restore : refill_boot;
    (void)d.client().run(print1());  // the first boot makes the snapshot
    for (int i = 0; i < 600 && d.children().size() > 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (int i = 0; i < std::max(3, samples / 3); ++i) {
      if (!d.wait_pool(Language::python, 1)) break;
      if (restore && i > 0 && d.children().size() == 1) restored_rss_kb = rss_kb(d.children()[0]);
      (void)d.client().run(print1());
      auto t = Clock::now();
      if (d.wait_pool(Language::python, 1)) s.v.push_back(ms_since(t));
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
    d.wait_pool(Language::python, 2);
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
  row("snapshot restore (no pool), libsandbox", restored);
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
  std::printf("\n%-52s %12s %12s\n", "warm pool refill (one python VM)", "median", "VMs/s");
  std::printf("%-52s %12s %12.2f\n", "by boot", fmt(refill_boot.median()).c_str(), rate(refill_boot));
  std::printf("%-52s %12s %12.2f\n", "by snapshot restore (+ TCG warm-up run)", fmt(refill_restore.median()).c_str(),
              rate(refill_restore));
  if (idle_vms)
    std::printf("\nhost RSS per idle warm VM (python, 256 MB guest): booted %.1f MB, restored %.1f MB\n",
                static_cast<double>(idle_rss_kb) / 1024.0 / static_cast<double>(idle_vms),
                static_cast<double>(restored_rss_kb) / 1024.0);
  std::printf("accelerator: %s%s\n", accel_name,
              accel.accel == daemon::Accel::tcg ? " (software emulation; KVM hosts are much faster)" : "");
  return 0;
}
