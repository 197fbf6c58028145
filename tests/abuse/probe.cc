#include "probe.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace sandbox::test {

using Clock = std::chrono::steady_clock;

uint64_t rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6));
  return 0;
}

size_t fd_count(pid_t pid) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

size_t count_lines(const std::string& text, const std::string& needle) {
  size_t n = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (std::string_view(text).substr(start, end - start).find(needle) != std::string_view::npos) ++n;
    start = end + 1;
  }
  return n;
}

unique_fd connect_unix(const std::string& path, bool nonblocking) {
  unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
  if (!fd) return fd;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof addr.sun_path - 1);
  // A full listen backlog makes a non-blocking connect fail with EAGAIN: the
  // attack clients connect blocking, then switch.
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fd.reset();
  return fd;
}

Probe::Probe(const TestDaemon& daemon) : pid_(daemon.pid()), client_(daemon.socket()), connected_(client_.connected()) {
  sample();
  sampler_ = std::thread([this] {
    while (!stop_) {
      sample();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  if (!connected_) return;
  asker_ = std::thread([this] {
    uint64_t id = 1;
    while (!stop_) {
      auto t = Clock::now();
      bool ok = client_.send(proto::StatusRequest{id});
      std::optional<proto::Message> m;
      // Only this request is in flight, so the next frame is its answer.
      if (ok) m = client_.receive(std::chrono::seconds(30));
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
      auto* st = m ? std::get_if<proto::Status>(&*m) : nullptr;
      if (st && st->id == id) {
        ++answered_;
        if (ms > max_latency_ms_) max_latency_ms_ = ms;
      } else {
        ++unanswered_;
        return;  // the connection is out of step or gone: nothing more to learn
      }
      ++id;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
}

void Probe::sample() {
  uint64_t rss = rss_kb(pid_);
  size_t fds = fd_count(pid_);
  if (rss > peak_rss_kb_) peak_rss_kb_ = rss;
  if (fds > peak_fds_) peak_fds_ = fds;
}

void Probe::stop() {
  stop_ = true;
  if (sampler_.joinable()) sampler_.join();
  if (asker_.joinable()) asker_.join();
  client_.close();
}

std::string Probe::describe() const {
  char b[256];
  std::snprintf(b, sizeof b, "peak RSS %.1f MiB, peak fds %zu, status answered %llu (max %.1f ms), unanswered %llu",
                static_cast<double>(peak_rss_kb_) / 1024.0, static_cast<size_t>(peak_fds_),
                static_cast<unsigned long long>(answered_), static_cast<double>(max_latency_ms_),
                static_cast<unsigned long long>(unanswered_));
  return b;
}

}  // namespace sandbox::test
