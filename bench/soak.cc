// The soak: N client threads for a fixed time against one private daemon,
// each mixing status calls, session execs and runs through libsandbox.
// It reports what was served and what failed (by error code), latency per
// kind, and the daemon's peak memory and descriptors, sampled from /proc:
// whether the daemon stays bounded and serving under sustained load, not
// how fast one call is (the benchmark proper measures that).
#include "bench/soak.h"

#include <array>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>

#include "bench/harness.h"

namespace sandbox::bench {
namespace {

enum Kind { kStatus, kExec, kRun, kKinds };
constexpr std::array<const char*, kKinds> kKindNames = {"status", "session exec", "run"};
// Out of ten calls: five status, three session execs, two runs.
Kind pick(std::mt19937& rng) {
  int r = static_cast<int>(rng() % 10);
  return r < 5 ? kStatus : r < 8 ? kExec : kRun;
}

// Sessions shared by all clients: each runs its execs one at a time, so a
// few keep VMs for runs too.
constexpr int kSessions = 2;

struct Tally {
  std::array<Stats, kKinds> served;
  std::array<std::map<std::string, uint64_t>, kKinds> failed;
  void merge(const Tally& o) {
    for (int k = 0; k < kKinds; ++k) {
      served[k].v.insert(served[k].v.end(), o.served[k].v.begin(), o.served[k].v.end());
      for (auto& [code, n] : o.failed[k]) failed[k][code] += n;
    }
  }
};

// Peak RSS and descriptors of a process, sampled every 100 ms.
class Sampler {
 public:
  explicit Sampler(pid_t pid) : pid_(pid) {
    thread_ = std::thread([this] {
      while (!stop_) {
        peak_rss_kb_ = std::max<uint64_t>(peak_rss_kb_, rss_kb(pid_));
        peak_fds_ = std::max(peak_fds_, fd_count(pid_));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  ~Sampler() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t peak_rss_kb() const { return peak_rss_kb_; }
  size_t peak_fds() const { return peak_fds_; }

 private:
  pid_t pid_;
  std::atomic<bool> stop_{false};
  uint64_t peak_rss_kb_ = 0;
  size_t peak_fds_ = 0;
  std::thread thread_;
};

double mib(uint64_t kb) { return static_cast<double>(kb) / 1024.0; }

}  // namespace

int run_soak(const SoakOptions& o) {
  // One uid drives every client: its per-uid limits are lifted to what the
  // soak needs, so that it measures the daemon rather than those limits.
  std::string connections = std::to_string(std::max(64, 2 * o.clients + 16));
  Daemon d(o.bin_dir, o.images,
           {"--pool-python", "2", "--pool-javascript", "0", "--pool-raw", "0", "--max-runs-per-uid", "1000",
            "--max-sessions-per-uid", std::to_string(kSessions), "--max-connections", connections,
            "--max-connections-per-uid", connections});
  auto status = d.client().status();
  if (!status) {
    std::fprintf(stderr, "sandbox-bench: the daemon did not start: %s\n", status.error().describe().c_str());
    return 1;
  }
  d.wait_pool(Language::python, 2);
  SessionOptions so;
  so.language = Language::python;
  so.idle_timeout = std::chrono::seconds(std::min(3600, o.seconds + 300));
  std::vector<Session> sessions;
  for (int i = 0; i < kSessions; ++i) {
    auto s = d.client().create_session(so);
    if (!s) {
      std::fprintf(stderr, "sandbox-bench: cannot open a session: %s\n", s.error().describe().c_str());
      return 1;
    }
    sessions.push_back(*s);
  }
  std::printf("soak: %d clients for %d s against a private sandboxd (accelerator %s); each call is a status (5 in "
              "10), a session exec (3 in 10, on %d shared sessions) or a python run (2 in 10)\n",
              o.clients, o.seconds, status->accelerator.c_str(), kSessions);
  std::fflush(stdout);

  uint64_t start_rss = rss_kb(d.pid());
  size_t start_fds = fd_count(d.pid());
  Sampler sampler(d.pid());
  Tally total;
  std::mutex mu;
  auto start = Clock::now();
  auto until = start + std::chrono::seconds(o.seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c)
    threads.emplace_back([&, c] {
      Tally mine;
      std::mt19937 rng(static_cast<unsigned>(c) + 1);
      Client client = d.client();
      // `capacity` is an answer here, counted, not retried for a minute.
      client.set_capacity_wait(std::chrono::milliseconds(0));
      RunRequest run;
      run.language = Language::python;
      run.code = "print(1)";
      while (Clock::now() < until) {
        Kind kind = pick(rng);
        auto t = Clock::now();
        std::optional<Error> error;
        if (kind == kStatus) {
          if (auto r = client.status(); !r) error = r.error();
        } else if (kind == kExec) {
          auto& s = sessions[rng() % sessions.size()];
          if (auto r = s.exec("n = globals().get('n', 0) + 1\nprint(n)"); !r) error = r.error();
        } else {
          if (auto r = client.run(run); !r) error = r.error();
        }
        double ms = ms_since(t);
        if (!error) {
          mine.served[kind].v.push_back(ms);
          continue;
        }
        ++mine.failed[kind][std::string(error_code_name(error->code))];
        // Backpressure: back off instead of spinning.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      std::lock_guard lock(mu);
      total.merge(mine);
    });
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  sampler.stop();
  for (auto& s : sessions) (void)s.close();
  // Once the clients are gone: what the daemon still holds.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  uint64_t end_rss = rss_kb(d.pid());
  size_t end_fds = fd_count(d.pid());

  std::printf("\n%-14s %9s %9s %9s %10s %10s %10s  %s\n", "kind", "served", "per s", "failed", "p50", "p95", "p99",
              "failures by code");
  for (int k = 0; k < kKinds; ++k) {
    const auto& s = total.served[k];
    uint64_t failed = 0;
    std::string codes;
    for (auto& [code, n] : total.failed[k]) {
      failed += n;
      codes += (codes.empty() ? "" : ", ") + code + " " + std::to_string(n);
    }
    std::printf("%-14s %9zu %9.1f %9llu %10s %10s %10s  %s\n", kKindNames[k], s.v.size(),
                static_cast<double>(s.v.size()) / secs, static_cast<unsigned long long>(failed),
                s.v.empty() ? "n/a" : fmt(s.median()).c_str(), s.v.empty() ? "n/a" : fmt(s.pct(95)).c_str(),
                s.v.empty() ? "n/a" : fmt(s.pct(99)).c_str(), codes.empty() ? "-" : codes.c_str());
  }
  std::printf("\ndaemon RSS: %.1f MiB at the start, peak %.1f MiB, %.1f MiB after\n", mib(start_rss),
              mib(sampler.peak_rss_kb()), mib(end_rss));
  std::printf("daemon descriptors: %zu at the start, peak %zu, %zu after (sampled every 100 ms)\n", start_fds,
              sampler.peak_fds(), end_fds);
  std::printf("accelerator: %s%s\n", status->accelerator.c_str(),
              status->accelerator == "tcg" ? " (software emulation; KVM hosts are much faster)" : "");
  return 0;
}

}  // namespace sandbox::bench
