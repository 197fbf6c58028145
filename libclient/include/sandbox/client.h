// libsandbox C++ API: run code in sandboxd's disposable microVMs.
//
//   sandbox::Client client;                      // default socket
//   sandbox::RunRequest req{.language = sandbox::Language::python, .code = "print(1)"};
//   auto result = client.run(req, [](sandbox::Stream s, std::string_view chunk) { ... });
//   if (!result) std::cerr << result.error().describe();
//
// A Client is cheap, copyable and thread-safe: every call uses its own
// connection to the daemon.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sandbox/result.h"

namespace sandbox {

inline constexpr const char* kDefaultSocketPath = "/run/sandboxd/sandboxd.sock";

enum class Language { python, javascript, raw };
std::string_view language_name(Language language);
std::optional<Language> parse_language(std::string_view name);

enum class Stream { out, err };

struct RunRequest {
  Language language = Language::python;
  std::string code;
  std::vector<std::pair<std::string, std::string>> env;
  std::chrono::milliseconds timeout{30'000};
  uint32_t memory_mb = 256;
};

struct Timing {
  uint64_t setup_ms = 0;
  uint64_t boot_ms = 0;
  uint64_t execute_ms = 0;
  uint64_t total_ms = 0;
};

struct RunResult {
  std::string stdout_data;  // bytes, exactly as written by the code
  std::string stderr_data;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  int exit_code = 0;
  int signal = 0;
  bool timed_out = false;
  uint64_t execution_time_ms = 0;  // wall time of the code, measured in the guest
  uint64_t cpu_time_ms = 0;        // host CPU time of the VM while the code ran
  uint64_t memory_peak_mb = 0;     // peak host memory of the VM
  Timing timing;
  bool warm_pool_hit = false;
  std::string accelerator;
  // How the VM came to be: "pool", "snapshot", "boot", "boot (snapshot failed)".
  std::string vm_start;
  // Session execs: the interpreter died during this exec (os._exit, a
  // crash, a timeout it ignored) and was restarted; earlier state is gone.
  bool state_lost = false;
};

struct PoolInfo {
  Language language = Language::python;
  uint32_t target = 0;   // configured warm VMs
  uint32_t ready = 0;    // booted, interpreter waiting
  uint32_t booting = 0;
  uint64_t hits = 0;     // runs served warm
  uint64_t misses = 0;   // runs that had to boot
};

struct DaemonStatus {
  std::string version;
  std::string accelerator;
  std::string accelerator_reason;
  uint32_t vms = 0;
  uint32_t max_vms = 0;
  uint32_t runs_active = 0;
  uint32_t runs_queued = 0;
  uint32_t sessions = 0;
  std::vector<PoolInfo> pool;
  // Per-VM cgroup limits on the host, or why there are none.
  std::string host_limits;
};

struct SnapshotInfo {
  std::string key;
  Language language = Language::python;
  uint32_t memory_mb = 0;
  uint64_t bytes = 0;  // on disk
};

// Called for each chunk of output while the code runs, on the calling thread.
using OutputCallback = std::function<void(Stream stream, std::string_view data)>;

struct SessionOptions {
  Language language = Language::python;
  std::vector<std::pair<std::string, std::string>> env;  // the interpreter's, for the whole session
  std::chrono::milliseconds timeout{30'000};             // each exec's default
  uint32_t memory_mb = 256;
  std::chrono::milliseconds idle_timeout{300'000};  // closed after this long without a call
};

struct SessionInfo {
  std::string id;
  Language language = Language::python;
  uint32_t memory_mb = 0;
  std::chrono::milliseconds idle_timeout{0};
  uint64_t exec_count = 0;
  uint64_t created_unix_ms = 0;
  uint64_t last_activity_unix_ms = 0;
  std::string vm_start;
};

struct FileEntry {
  std::string name;
  bool is_dir = false;
  uint64_t size = 0;  // regular files; 0 otherwise
};

class Client;

// A VM kept alive across calls: variables, imports, files and background
// processes persist from one exec to the next. A Session is a handle (the
// session id and the socket); copies refer to the same session, which lives
// in the daemon until close(), its idle timeout or its VM's end.
class Session {
 public:
  Session(std::string socket_path, std::string id) : socket_path_(std::move(socket_path)), id_(std::move(id)) {}
  const std::string& id() const { return id_; }

  // Runs code in the session's interpreter; the result is a run's.
  // `timeout` 0 takes the session's default.
  Result<RunResult> exec(std::string_view code, const OutputCallback& on_output = {},
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const;
  // Files, relative to the session's home (at most 50 MB each). A write is
  // atomic and creates parent directories.
  Result<void> write_file(std::string_view path, std::string_view data, bool executable = false) const;
  Result<std::string> read_file(std::string_view path) const;
  Result<std::vector<FileEntry>> list_files(std::string_view dir = {}) const;
  // Destroys the VM; later calls get session_closed.
  Result<void> close() const;

 private:
  std::string socket_path_;
  std::string id_;
};

class Client {
 public:
  explicit Client(std::string socket_path = kDefaultSocketPath) : socket_path_(std::move(socket_path)) {}

  // Runs `request` in a fresh VM; blocks until the result. Errors carry a
  // code from the shared taxonomy (invalid_argument, capacity, ...).
  Result<RunResult> run(const RunRequest& request, const OutputCallback& on_output = {}) const;
  // What the daemon is doing: accelerator, VMs, queue, warm pool.
  Result<DaemonStatus> status() const;
  // The daemon's snapshot cache; `drop` empties it first (root only).
  Result<std::vector<SnapshotInfo>> snapshots(bool drop = false) const;

  // Opens a session; blocks until its VM is ready.
  Result<Session> create_session(const SessionOptions& options = {}) const;
  // A handle on an existing session of the caller's (nothing is checked
  // until it is used).
  Session session(std::string id) const { return Session(socket_path_, std::move(id)); }
  // The caller's open sessions.
  Result<std::vector<SessionInfo>> sessions() const;

  const std::string& socket_path() const { return socket_path_; }

 private:
  std::string socket_path_;
};

}  // namespace sandbox
