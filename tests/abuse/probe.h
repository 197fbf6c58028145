// Measuring a daemon under attack: its memory and descriptors from /proc,
// and a client on its own connection that keeps asking for `status` while
// the attack runs, to show that the daemon still serves others.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "harness.h"

namespace sandbox::test {

// VmRSS of `pid` in KiB (0 if gone).
uint64_t rss_kb(pid_t pid);
// Open descriptors of `pid`.
size_t fd_count(pid_t pid);
// Lines of `text` that contain `needle`.
size_t count_lines(const std::string& text, const std::string& needle);
// A stream socket connected to `path` (blocking unless `nonblocking`), or
// an empty fd.
unique_fd connect_unix(const std::string& path, bool nonblocking = false);
// Waits until `pred` holds, polling; false at the deadline.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds deadline) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// Samples the daemon's RSS and descriptors every 50 ms and sends it a
// status request every 100 ms on one connection, opened at construction
// (so that a flood of connections cannot keep it out), until stop().
class Probe {
 public:
  explicit Probe(const TestDaemon& daemon);
  ~Probe() { stop(); }
  void stop();

  bool connected() const { return connected_; }
  uint64_t peak_rss_kb() const { return peak_rss_kb_; }
  size_t peak_fds() const { return peak_fds_; }
  // Status requests answered, and those that got no answer within 30 s.
  uint64_t answered() const { return answered_; }
  uint64_t unanswered() const { return unanswered_; }
  double max_latency_ms() const { return max_latency_ms_; }
  // A summary for the test's output.
  std::string describe() const;

 private:
  void sample();

  pid_t pid_;
  RawClient client_;
  bool connected_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> peak_rss_kb_{0}, answered_{0}, unanswered_{0};
  std::atomic<size_t> peak_fds_{0};
  std::atomic<double> max_latency_ms_{0};
  std::thread sampler_, asker_;
};

}  // namespace sandbox::test
