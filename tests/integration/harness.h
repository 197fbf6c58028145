// Helpers for tests that drive a real sandboxd: a private daemon instance
// in a temp directory, a bounded command runner, and process accounting.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <sandbox/limits.h>

#include "common/framing.h"
#include "common/protocol.h"
#include "common/unique_fd.h"
#include "sandbox/client.h"

namespace sandbox::test {

struct CmdResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out, err;
  bool timed_out = false;
};

// Runs argv with `input` on stdin, bounded by `timeout`; killed past it.
CmdResult run_command(const std::vector<std::string>& argv, const std::string& input = {},
                      std::chrono::seconds timeout = std::chrono::seconds(120));

std::string images_dir();

// A run request with the test's usual defaults.
RunRequest make_request(Language language, std::string code, int timeout_ms = 30'000);

class TestDaemon {
 public:
  // The daemon shared by most tests, started on first use.
  static TestDaemon& shared();
  static TestDaemon* shared_if_started();

  TestDaemon() = default;
  ~TestDaemon();
  TestDaemon(const TestDaemon&) = delete;
  TestDaemon& operator=(const TestDaemon&) = delete;

  // Starts sandboxd with a private socket and state dir; waits until it
  // accepts connections or exits. Returns false if it exited.
  bool start(const std::vector<std::string>& extra_args = {}, const std::string& images = images_dir());
  // SIGTERM, then SIGKILL after `grace`; returns the wait status.
  int stop(std::chrono::seconds grace = std::chrono::seconds(20));
  bool running() const { return pid_ > 0; }

  const std::string& socket() const { return socket_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  std::string log() const;
  // Direct children of the daemon (its QEMU processes).
  std::vector<pid_t> children() const;
  // Waits until the daemon has at most `n` children; false on deadline.
  bool wait_children_at_most(size_t n, std::chrono::seconds deadline) const;

 private:
  std::string dir_, socket_;
  pid_t pid_ = -1;
};

// A raw protocol connection, for what libsandbox would never send.
class RawClient {
 public:
  explicit RawClient(const std::string& socket);
  bool connected() const { return bool(fd_); }
  bool send_bytes(std::string_view bytes);
  bool send(const proto::Message& m);
  // Next message, or nullopt on EOF/timeout; *closed says whether the peer closed.
  std::optional<proto::Message> receive(std::chrono::seconds timeout, bool* closed = nullptr);
  void close() { fd_.reset(); }

 private:
  unique_fd fd_;
  MessageReader reader_{limits::kMaxFrameBytes};
};

// Runs `fn` when the cases are done, before the leak check: for fixtures
// shared by several cases.
void at_suite_end(std::function<void()> fn);
void run_suite_end();

// All processes whose command line starts with `prefix` (e.g. the QEMU binary).
std::vector<pid_t> processes_named(const std::string& prefix);
// Everything readable from `fd` until end of file.
std::string read_all(int fd);
// Entries directly under `dir`.
std::vector<std::string> list_dir(const std::string& dir);
std::string slurp(const std::string& path);

// The test "internet" on loopback (net_hosts.py): a DNS server that logs
// its queries, HTTPS (a self-signed CA in dir/ca.pem), HTTP and echo
// servers for `names` ("web.test=127.0.0.2"); with `index_dir`, the web
// servers also serve a package index from it (/simple/, /files/) and log
// those requests. `skip` says why it could not start.
class LoopbackHosts {
 public:
  explicit LoopbackHosts(const std::vector<std::string>& names, const std::string& index_dir = {});
  ~LoopbackHosts();
  LoopbackHosts(const LoopbackHosts&) = delete;
  LoopbackHosts& operator=(const LoopbackHosts&) = delete;

  std::string dir, skip;
  int dns = 0, http = 0, https = 0, echo = 0;
  bool web_ports = false;  // 443 and 80 served too
  std::vector<std::string> dns_queries() const;
  bool queried(const std::string& name) const;
  // Paths of the index requests served so far.
  std::vector<std::string> index_requests() const;

 private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
};

}  // namespace sandbox::test
