// What sandbox-bench's measurements share: a private sandboxd started for
// the measurement, percentiles, and reading a process's memory.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/process.h"
#include "common/unique_fd.h"
#include "sandbox/client.h"

namespace sandbox::bench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

struct Stats {
  std::vector<double> v;
  double pct(double p) const {
    if (v.empty()) return 0;
    auto s = v;
    std::sort(s.begin(), s.end());
    size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(s.size() - 1) + 0.5);
    return s[std::min(i, s.size() - 1)];
  }
  double median() const { return pct(50); }
};

inline std::string fmt(double ms) {
  char b[32];
  std::snprintf(b, sizeof b, ms < 10 ? "%.2f ms" : ms < 1000 ? "%.1f ms" : "%.0f ms", ms);
  return b;
}

// Runs a command to completion with stdout/stderr discarded; returns exit status.
inline int run_quiet(const std::vector<std::string>& argv) {
  auto p = Process::spawn({argv, {}, true});
  if (!p) return -1;
  int status = p->wait();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class Daemon {
 public:
  Daemon(const std::string& bin_dir, const std::string& images, std::vector<std::string> args) {
    char tmpl[] = "/tmp/sandbox-bench.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    socket_ = dir_ + "/sandboxd.sock";
    std::vector<std::string> argv = {bin_dir + "/sandboxd", "--config", "/dev/null", "--socket", socket_,
                                     "--images", images, "--state-dir", dir_};
    argv.insert(argv.end(), args.begin(), args.end());
    sandbox::unique_fd log(::open((dir_ + "/log").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    auto p = Process::spawn({argv, {{1, log.get()}, {2, log.get()}}, true});
    if (p) proc_ = std::move(*p);
    for (int i = 0; i < 3000 && !Client(socket_).status().ok(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ~Daemon() {
    (void)proc_.signal(SIGTERM);
    for (int i = 0; i < 1500 && !proc_.try_wait(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    proc_.kill_and_wait();
    fs::remove_all(dir_);
  }
  const std::string& socket() const { return socket_; }
  Client client() const { return Client(socket_); }
  pid_t pid() const { return proc_.pid(); }
  std::vector<pid_t> children() const {
    std::ifstream in("/proc/" + std::to_string(pid()) + "/task/" + std::to_string(pid()) + "/children");
    std::vector<pid_t> out;
    pid_t p;
    while (in >> p) out.push_back(p);
    return out;
  }
  // Until the pool holds `n` ready VMs of `lang` and none is booting.
  bool wait_pool(Language lang, uint32_t n, std::chrono::seconds deadline = std::chrono::seconds(120)) const {
    auto until = Clock::now() + deadline;
    while (Clock::now() < until) {
      if (auto st = client().status(); st.ok())
        for (auto& p : st->pool)
          if (p.language == lang && p.ready >= n && p.booting == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Until the daemon has settled as after any start: every pool lane full
  // and none booting, and a snapshot template saved for each language a
  // lane keeps (so only for a daemon with snapshots on, the default).
  // Until then runs compete with the start-up's boots, which is not what a
  // steady figure measures.
  bool wait_settled(std::chrono::seconds deadline = std::chrono::seconds(180)) const {
    auto until = Clock::now() + deadline;
    while (Clock::now() < until) {
      auto st = client().status();
      auto snaps = client().snapshots();
      bool settled = st.ok() && snaps.ok();
      for (size_t i = 0; settled && i < st->pool.size(); ++i) {
        const auto& p = st->pool[i];
        if (p.ready < p.target || p.booting > 0) settled = false;
        if (p.target == 0 || !p.layer.empty()) continue;
        bool saved = false;
        for (const auto& s : *snaps) saved = saved || s.language == p.language;
        settled = settled && saved;
      }
      if (settled) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  std::string dir_, socket_;
  Process proc_;
};

// VmRSS of `pid` in KiB (0 if gone).
inline uint64_t rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6));
  return 0;
}

// Proportional set size of `pid`: its RSS with each shared page divided
// among the processes that map it (what a VM really costs the host).
inline uint64_t pss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("Pss:")) return std::stoull(line.substr(4));
  return 0;
}

// Open descriptors of `pid`.
inline size_t fd_count(pid_t pid) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

}  // namespace sandbox::bench
