// libsandbox C++ API: run code in sandboxd's disposable microVMs.
//
//   sandbox::Client client;                      // default socket
//   sandbox::RunRequest req{.language = sandbox::Language::python, .code = "print(1)"};
//   auto result = client.run(req, [](sandbox::Stream s, std::string_view chunk) { ... });
//   if (!result) std::cerr << result.error().describe();
//
// A Client is cheap, copyable and thread-safe: every call uses its own
// connection to the daemon. Every call is bounded in time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox {

inline constexpr const char* kDefaultSocketPath = "/run/sandboxd/sandboxd.sock";

// Called for each chunk of output while the code runs, on the calling thread.
using OutputCallback = std::function<void(Stream stream, std::string_view data)>;

class Client;

// A VM kept alive across calls: variables, imports, files and background
// processes persist from one exec to the next. A Session is a handle (the
// session id and the socket); copies refer to the same session, which lives
// in the daemon until close(), its idle timeout or its VM's end.
class Session {
 public:
  Session(std::string socket_path, std::string id) : socket_path_(std::move(socket_path)), id_(std::move(id)) {
    info_.id = id_;
  }
  Session(std::string socket_path, SessionInfo info)
      : socket_path_(std::move(socket_path)), id_(info.id), info_(std::move(info)) {}
  const std::string& id() const { return id_; }
  // The session as the daemon opened it (its exposed ports and their URLs,
  // its allowlist); only the id for a handle made from an id.
  const SessionInfo& info() const { return info_; }

  // Runs code in the session's interpreter; the result is a run's.
  // `timeout` 0 takes the session's default. If the caller goes away (the
  // call's connection closes), the exec is stopped as at its timeout.
  Result<RunResult> exec(std::string_view code, const OutputCallback& on_output = {},
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const;
  // Files, relative to the session's home (at most 50 MB each). A write is
  // atomic and creates parent directories.
  Result<void> write_file(std::string_view path, std::string_view data, bool executable = false) const;
  Result<std::string> read_file(std::string_view path) const;
  // At most limits::kMaxListEntries entries; `truncated` says there were more.
  Result<FileListing> list_files(std::string_view dir = {}) const;
  // Replaces the session's egress allowlist at run time: `domains` as for
  // a run, `network` with no domains the operator's default list, neither
  // (the default) off. Connections the new list does not admit are reset.
  // Returns the session as it is now.
  Result<SessionInfo> set_network(const std::vector<std::string>& domains, bool network = false) const;
  // Destroys the VM; later calls get session_closed.
  Result<void> close() const;

  // Polled (every 100 ms or so) while exec waits: once it returns true the
  // call closes its connection, the daemon stops the exec as at its
  // timeout, and the call fails with `communication`. For servers whose
  // own caller went away.
  void set_cancel_check(std::function<bool()> check) { cancel_ = std::move(check); }

 private:
  std::string socket_path_;
  std::string id_;
  std::function<bool()> cancel_;
  SessionInfo info_;
};

class Client {
 public:
  explicit Client(std::string socket_path = kDefaultSocketPath) : socket_path_(std::move(socket_path)) {}

  // Runs `request` in a fresh VM; blocks until the result. Errors carry a
  // code from the shared taxonomy (invalid_argument, capacity, ...). While
  // the daemon answers `capacity` (busy), the run is retried with backoff
  // for up to capacity_wait().
  Result<RunResult> run(const RunRequest& request, const OutputCallback& on_output = {}) const;
  // What the daemon is doing: accelerator, VMs, queue, warm pool.
  Result<DaemonStatus> status() const;
  // The daemon's snapshot cache; `drop` empties it first (root only).
  Result<std::vector<SnapshotInfo>> snapshots(bool drop = false) const;
  // The package layer cache and the builds in progress. `drop` removes the
  // layer with that key first, `drop_all` every layer not in use (root only).
  Result<std::vector<LayerInfo>> layers(const std::string& drop = {}, bool drop_all = false) const;
  // The images the daemon boots (files, SHA-256, kernel release) and the
  // packages in its root, with the interpreters' and tools' versions.
  Result<ImagesInfo> images() const;
  // The daemon's counters, gauges and latency histograms in Prometheus'
  // text format (version 0.0.4).
  Result<std::string> metrics() const;
  // Takes the daemon out of rotation (root only): no new runs or sessions,
  // the warm pool emptied, open ones go on until `deadline` (0: the
  // daemon's default). The status, draining, once it has begun.
  Result<DaemonStatus> drain(std::chrono::milliseconds deadline) const;

  // Opens a session; blocks until its VM is ready.
  Result<Session> create_session(const SessionOptions& options = {}) const;
  // A handle on an existing session of the caller's (nothing is checked
  // until it is used).
  Session session(std::string id) const {
    Session s(socket_path_, std::move(id));
    s.set_cancel_check(cancel_);
    return s;
  }
  // The caller's open sessions.
  Result<std::vector<SessionInfo>> sessions() const;

  const std::string& socket_path() const { return socket_path_; }
  // How long run() keeps retrying a `capacity` answer; 0 returns it at once.
  std::chrono::milliseconds capacity_wait() const { return capacity_wait_; }
  void set_capacity_wait(std::chrono::milliseconds wait) { capacity_wait_ = wait; }
  // Polled while run() or create_session() waits (and handed to sessions
  // this client makes): once it returns true the call closes its
  // connection, the daemon cancels the run and its VM, and the call fails
  // with `communication`.
  void set_cancel_check(std::function<bool()> check) { cancel_ = std::move(check); }

 private:
  std::string socket_path_;
  std::chrono::milliseconds capacity_wait_{60'000};
  std::function<bool()> cancel_;
};

}  // namespace sandbox
