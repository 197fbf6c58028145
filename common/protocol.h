// The one protocol shared by daemon, libclient and agent.
//
// Two channels carry the same framing (4-byte big-endian length, then one
// msgpack map with a "type" key):
//   client <-> daemon   control socket: run, output, result, error
//   daemon <-> agent    virtio-serial port: hello, exec, output, exec_done
// Decoding is strict: unknown types, unknown or duplicate keys, wrong types
// and values over the limits in limits.h are errors, never crashes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/result.h"

namespace sandbox::proto {

inline constexpr uint32_t kProtocolVersion = 1;
// Name of the virtio-serial port the agent opens.
inline constexpr std::string_view kAgentPortName = "org.sandboxd.agent.0";

enum class Language : uint8_t { python, javascript, raw };
std::string_view language_name(Language language);
std::optional<Language> language_from_name(std::string_view name);

enum class Stream : uint8_t { out, err };
std::string_view stream_name(Stream stream);

using EnvList = std::vector<std::pair<std::string, std::string>>;

// client -> daemon: run code in a fresh VM.
struct RunRequest {
  uint64_t id = 0;
  Language language = Language::python;
  std::string code;
  EnvList env;
  uint32_t timeout_ms = 0;
  uint32_t memory_mb = 0;
};

// agent -> daemon and daemon -> client: a piece of output, in order.
struct Output {
  uint64_t id = 0;
  Stream stream = Stream::out;
  std::string data;
};

struct Timing {
  uint64_t setup_ms = 0;    // request accepted -> VM process started
  uint64_t boot_ms = 0;     // VM process started -> agent hello
  uint64_t execute_ms = 0;  // exec sent -> exec done
  uint64_t total_ms = 0;    // request accepted -> result
};

// daemon -> client: the end of a run.
struct RunResult {
  uint64_t id = 0;
  std::string stdout_data;
  std::string stderr_data;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  int32_t exit_code = 0;
  int32_t signal = 0;  // 0 unless the process was killed by a signal
  bool timed_out = false;
  uint64_t execution_time_ms = 0;  // measured by the guest
  Timing timing;
  uint64_t cpu_time_ms = 0;     // host CPU time of the VM while the code ran
  uint64_t memory_peak_mb = 0;  // peak host memory of the VM
  bool warm_pool_hit = false;
  std::string accelerator;  // "kvm" or "tcg"
  // How the VM came to be: "pool", "snapshot", "boot", or "boot" after a
  // snapshot failed to restore ("boot (snapshot failed)").
  std::string vm_start;
  // Session execs only: the interpreter died during this exec and was
  // restarted, so variables and imports from earlier execs are gone.
  bool state_lost = false;
};

// daemon -> client: the request failed; no result follows.
struct ErrorReply {
  uint64_t id = 0;
  ErrorCode code = ErrorCode::internal;
  std::string message;
};

// agent -> daemon: the agent is up and speaks this version. `prestarted`
// names the language whose interpreter is already waiting for code ("" if
// none): the guest kernel command line asked for it.
struct Hello {
  uint32_t version = 0;
  std::string kernel;
  std::string prestarted;
};

// daemon -> agent, first thing after a VM is restored from a snapshot: make
// this clone unlike its siblings (entropy, clock, name). The agent answers
// with a fresh hello.
struct Resume {
  std::string seed;  // random bytes from the host for the guest's RNG
  uint64_t realtime_ns = 0;
  std::string hostname;
  // Run a trivial program first (software emulation starts with an empty
  // translation cache; a warm VM should not make its caller pay for it).
  bool warm_up = false;
};

// daemon -> agent and back: liveness of an idle VM.
struct Ping {
  uint64_t seq = 0;
};
struct Pong {
  uint64_t seq = 0;
};

// client -> daemon: what is the daemon doing?
struct StatusRequest {
  uint64_t id = 0;
};

struct PoolStats {
  Language language = Language::python;
  uint32_t target = 0;   // configured size
  uint32_t ready = 0;    // booted, interpreter waiting
  uint32_t booting = 0;
  uint64_t hits = 0;     // runs served from the pool
  uint64_t misses = 0;   // runs that had to boot
};

// daemon -> client.
struct Status {
  uint64_t id = 0;
  std::string version;
  std::string accelerator;
  std::string accelerator_reason;
  uint32_t vms = 0;       // QEMU processes alive, pool included
  uint32_t max_vms = 0;
  uint32_t runs_active = 0;
  uint32_t runs_queued = 0;
  uint32_t sessions = 0;  // open sessions, all users
  std::vector<PoolStats> pool;
  // Host-side per-VM limits: the cgroup subtree and its controllers, or
  // why there are none.
  std::string host_limits;
};

// daemon -> agent: run code as the unprivileged user.
struct Exec {
  uint64_t id = 0;
  Language language = Language::python;
  std::string code;
  EnvList env;
  uint32_t timeout_ms = 0;
  uint32_t grace_ms = 0;      // SIGTERM at the timeout, SIGKILL this much later
  uint64_t stdout_limit = 0;  // bytes sent back at most; the rest is drained
  uint64_t stderr_limit = 0;
  uint32_t pids_max = 0;      // processes and threads of the code at once
  // Session exec: run in the long-lived interpreter (started on the first
  // one, with `env`), keeping its state; else a one-shot interpreter.
  bool session = false;
};

// agent -> daemon: the process tree of an exec is gone.
struct ExecDone {
  uint64_t id = 0;
  int32_t exit_code = 0;
  int32_t signal = 0;
  bool timed_out = false;
  uint64_t duration_ms = 0;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  bool state_lost = false;  // session exec: the interpreter had to be restarted
};

// client -> daemon: open a session, a VM kept for many execs. `timeout_ms`
// is each exec's default; the session closes after `idle_timeout_ms`
// without a call.
struct SessionCreate {
  uint64_t id = 0;
  Language language = Language::python;
  EnvList env;
  uint32_t timeout_ms = 0;
  uint32_t memory_mb = 0;
  uint32_t idle_timeout_ms = 0;
};

struct SessionInfo {
  std::string session;
  Language language = Language::python;
  uint32_t memory_mb = 0;
  uint32_t idle_timeout_ms = 0;
  uint64_t exec_count = 0;
  uint64_t created_unix_ms = 0;
  uint64_t last_activity_unix_ms = 0;
  std::string vm_start;  // how its VM came to be, as in a run result
};

// daemon -> client: the answer to SessionCreate (one entry) and to
// SessionListRequest (the caller's sessions).
struct SessionList {
  uint64_t id = 0;
  std::vector<SessionInfo> sessions;
};

struct SessionListRequest {
  uint64_t id = 0;
};

// client -> daemon: run code in a session; answered like a run (output,
// then a result). `timeout_ms` 0 takes the session's default.
struct SessionExec {
  uint64_t id = 0;
  std::string session;
  std::string code;
  uint32_t timeout_ms = 0;
};

struct SessionClose {
  uint64_t id = 0;
  std::string session;
};

// The answer to a request that returns nothing else (close).
struct Ack {
  uint64_t id = 0;
};

// Files travel as zstd frames of at most limits::kFileChunkBytes each.
// client -> daemon: the whole file, every chunk inline. daemon -> agent:
// this header with no chunks, then FileChunk messages. Paths are relative
// to the session's home.
struct FileWrite {
  uint64_t id = 0;
  std::string session;  // empty on the agent channel
  std::string path;
  uint64_t size = 0;  // bytes after decompression, all chunks together
  bool executable = false;
  std::vector<std::string> chunks;
};

// One chunk of a file in transit (daemon -> agent for writes, agent ->
// daemon for reads).
struct FileChunk {
  uint64_t id = 0;
  std::string data;  // one zstd frame
};

// client -> daemon -> agent: send a file back. The agent answers with
// FileChunk messages and FileDone; the daemon gathers them into FileContent.
struct FileRead {
  uint64_t id = 0;
  std::string session;
  std::string path;
};

// agent -> daemon, and daemon -> client for writes: the transfer is complete.
struct FileDone {
  uint64_t id = 0;
  uint64_t size = 0;
};

// daemon -> client: a file read.
struct FileContent {
  uint64_t id = 0;
  uint64_t size = 0;
  std::vector<std::string> chunks;
};

// client -> daemon -> agent: the entries of a directory ("" is home).
struct FileListRequest {
  uint64_t id = 0;
  std::string session;
  std::string path;
};

struct FileEntry {
  std::string name;
  bool is_dir = false;
  uint64_t size = 0;
};

struct FileList {
  uint64_t id = 0;
  std::vector<FileEntry> entries;
  bool truncated = false;  // more entries than one listing returns
};

// client -> daemon: list the snapshot cache; with `drop`, empty it first
// (root and the daemon's own uid only).
struct SnapshotsRequest {
  uint64_t id = 0;
  bool drop = false;
};

struct SnapshotInfo {
  std::string key;
  Language language = Language::python;
  uint32_t memory_mb = 0;
  uint64_t bytes = 0;  // on disk
};

// daemon -> client.
struct SnapshotList {
  uint64_t id = 0;
  std::vector<SnapshotInfo> snapshots;
};

using Message = std::variant<RunRequest, Output, RunResult, ErrorReply, Hello, Exec, ExecDone, Ping, Pong,
                             StatusRequest, Status, Resume, SnapshotsRequest, SnapshotList, SessionCreate,
                             SessionList, SessionListRequest, SessionExec, SessionClose, Ack, FileWrite, FileChunk,
                             FileRead, FileDone, FileContent, FileListRequest, FileList>;

// The request id a message carries (0 for those without one: hello, ping...).
uint64_t request_id_of(const Message& message);

// Payload only (no length prefix).
std::string encode(const Message& message);
// Strict, bounded decode of one payload.
Result<Message> decode(std::string_view payload);

}  // namespace sandbox::proto
