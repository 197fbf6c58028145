// The one protocol shared by daemon, libclient and agent.
//
// Two channels carry the same framing (4-byte big-endian length, then one
// msgpack map with a "type" key):
//   client <-> daemon   control socket: run, output, result, error, sessions, files, status,
//                       snapshots, images, metrics, layers
//   daemon <-> agent    virtio-serial port: hello, exec, output, exec_done, files
// Every message is described once, below, as a table of fields with their
// bounds (schema.h); encoder and decoder are derived from the tables.
// Decoding is strict: unknown types, unknown or duplicate keys, wrong types
// and values over the bounds are errors, never crashes.
//
// Files travel as a header (file_write, or file_read answered by chunks)
// followed by file_chunk frames of one zstd frame each, and end with
// file_done; no frame ever holds a whole file.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <sandbox/limits.h>
#include <sandbox/result.h>
#include <sandbox/types.h>

#include "common/schema.h"

namespace sandbox::proto {

inline constexpr uint32_t kProtocolVersion = 4;
// Name of the virtio-serial port the agent opens.
inline constexpr std::string_view kAgentPortName = "org.sandboxd.agent.0";

// Serial of the package layer's disk, by which the agent finds it.
inline constexpr std::string_view kLayerDiskSerial = "sandbox-layer";
// Where the agent mounts it, and where each interpreter looks inside it.
inline constexpr std::string_view kLayerMount = "/run/layer";
inline constexpr std::string_view kLayerPythonDir = "/run/layer/python";
inline constexpr std::string_view kLayerNodeDir = "/run/layer/node_modules";
// Serial of a builder VM's writable scratch disk, where the layer image it
// makes goes; and the device node the agent gives the unprivileged user
// for it (a builder runs its installer as that user, like code).
inline constexpr std::string_view kScratchDiskSerial = "sandbox-scratch";
inline constexpr std::string_view kScratchDevice = "/dev/scratch";

// Entropy handed to a restored guest; the kernel takes at most 256 bytes' worth.
inline constexpr size_t kMaxSeedBytes = 256;
// The operator's extra CA certificates handed to each guest (PEM).
inline constexpr size_t kMaxTrustBytes = 1 << 20;
// Snapshots listed at once (the cache holds a few per language).
inline constexpr size_t kMaxSnapshotEntries = 512;
// One pool per language; a status never lists more.
inline constexpr size_t kMaxPoolEntries = 8;
// Sessions listed at once: far above any per-user limit.
inline constexpr size_t kMaxSessionEntries = 256;
inline constexpr size_t kMaxHostnameBytes = 64;
// Packages of the root image listed at once: several times a Debian root
// with the guest's tools, and no more entries than one container may hold.
inline constexpr size_t kMaxPackageEntries = limits::kMaxDecodeElements;
// Tools named in an image description: one per program the recipe installs.
inline constexpr size_t kMaxToolEntries = 64;
// Image files: kernel, initrd, rootfs, with room for more roles.
inline constexpr size_t kMaxImageEntries = 8;
// A SHA-256 in hex.
inline constexpr size_t kSha256HexBytes = 64;
// The metrics text: a few hundred fixed series, with room to grow.
inline constexpr size_t kMaxMetricsBytes = 256 << 10;
// Layers listed at once, builds included: far more than a cache of a few
// GB holds.
inline constexpr size_t kMaxLayerEntries = 512;
// A resolved lock: a large data-science stack has about 150 packages.
inline constexpr size_t kMaxLockEntries = 1000;
// A layer key: "py-" or "js-" and a SHA-256 in hex, with room.
inline constexpr size_t kMaxLayerKeyBytes = 80;

// ---------------------------------------------------------------- client <-> daemon

// client -> daemon: run code in a fresh VM.
struct Run {
  uint64_t id = 0;
  RunRequest request;
};

// agent -> daemon and daemon -> client: a piece of output, in order.
struct Output {
  uint64_t id = 0;
  Stream stream = Stream::out;
  std::string data;
};

// daemon -> client: the end of a run or of a session exec.
struct Finished {
  uint64_t id = 0;
  RunResult result;
};

// daemon -> client (and agent -> daemon): the request failed; nothing follows.
struct ErrorReply {
  uint64_t id = 0;
  ErrorCode code = ErrorCode::internal;
  std::string message;
};

// client -> daemon: what is the daemon doing?
struct StatusRequest {
  uint64_t id = 0;
};

struct Status {
  uint64_t id = 0;
  DaemonStatus status;
};

// client -> daemon: list the snapshot cache; with `drop`, empty it first
// (root and the daemon's own uid only).
struct SnapshotsRequest {
  uint64_t id = 0;
  bool drop = false;
};

struct SnapshotList {
  uint64_t id = 0;
  std::vector<SnapshotInfo> snapshots;
};

// client -> daemon: which images does the daemon boot, and what is in them?
struct ImagesRequest {
  uint64_t id = 0;
};

struct ImageList {
  uint64_t id = 0;
  ImagesInfo images;
};

// client -> daemon: list the package layer cache and the builds in
// progress; `drop` removes one layer by key, `drop_all` every layer not in
// use (root and the daemon's own uid only).
struct LayersRequest {
  uint64_t id = 0;
  std::string drop;
  bool drop_all = false;
};

struct LayerList {
  uint64_t id = 0;
  std::vector<LayerInfo> layers;
};

// client -> daemon: the daemon's counters, gauges and histograms.
struct MetricsRequest {
  uint64_t id = 0;
};

// daemon -> client: the metrics in Prometheus' text format (version 0.0.4).
struct MetricsText {
  uint64_t id = 0;
  std::string text;
};

// client -> daemon: stop taking runs and sessions (root and the daemon's
// own uid only), for a rollout: queued runs are refused, the warm pool is
// emptied, running runs and open sessions go on until `deadline_ms` (0: the
// configured shutdown grace), then are cancelled and closed. Answered with
// Status (draining). Only a restart undoes it.
struct Drain {
  uint64_t id = 0;
  uint32_t deadline_ms = 0;
};

// client -> daemon: open a session, a VM kept for many execs.
struct SessionCreate {
  uint64_t id = 0;
  SessionOptions options;
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

// client -> daemon: replace a live session's egress allowlist (`network`
// alone: the operator's default list; no network and no domains: off).
// Exposed ports stay as they are. Answered with the session's SessionList
// entry once the guest has the new policy; open connections the new policy
// does not admit are reset.
struct SessionNetwork {
  uint64_t id = 0;
  std::string session;
  bool network = false;
  std::vector<std::string> allowed_domains;
};

// The answer to a request that returns nothing else (close).
struct Ack {
  uint64_t id = 0;
};

// client -> daemon -> agent: a file into the session's home. FileChunk
// frames carrying `size` bytes in all follow; the answer is FileDone.
// `session` is empty on the agent channel.
struct FileWrite {
  uint64_t id = 0;
  std::string session;
  std::string path;
  uint64_t size = 0;  // bytes after decompression, all chunks together
  bool executable = false;
};

// One piece of a file in transit: a zstd frame of at most kFileChunkBytes.
struct FileChunk {
  uint64_t id = 0;
  std::string data;
};

// client -> daemon -> agent: send a file back, as FileChunk frames and then FileDone.
struct FileRead {
  uint64_t id = 0;
  std::string session;
  std::string path;
};

// The end of a transfer: a write stored, or a read complete (`size` in all).
struct FileDone {
  uint64_t id = 0;
  uint64_t size = 0;
};

// client -> daemon -> agent: the entries of a directory ("" is home).
struct FileListRequest {
  uint64_t id = 0;
  std::string session;
  std::string path;
};

struct FileList {
  uint64_t id = 0;
  FileListing listing;
};

// ---------------------------------------------------------------- daemon <-> agent

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
  // The pids limit runs ask for unless told otherwise: a Python warm-up
  // leaves the exec tree at it, so such a run has none to write (0: as it
  // is).
  uint32_t pids_max = 0;
};

// daemon -> agent and back: liveness of an idle VM.
struct Ping {
  uint64_t seq = 0;
};
struct Pong {
  uint64_t seq = 0;
};

// daemon -> agent: run code as the unprivileged user. The timeout starts
// when the interpreter is ready and has the code; getting there is bounded
// by `startup_timeout_ms`.
struct Exec {
  uint64_t id = 0;
  Language language = Language::python;
  std::string code;
  EnvList env;
  // Set by the interpreter itself just before the code (or the cell) runs,
  // so a waiting interpreter serves it: only for what is read at use time,
  // such as proxy settings, never for what an interpreter reads at start.
  // An empty value unsets the variable.
  EnvList code_env;
  uint32_t timeout_ms = 0;
  uint32_t startup_timeout_ms = 0;
  uint32_t grace_ms = 0;      // SIGTERM at the timeout, SIGKILL this much later
  uint64_t stdout_limit = 0;  // bytes sent back at most; the rest is drained
  uint64_t stderr_limit = 0;
  uint32_t pids_max = 0;  // processes and threads of the code at once
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
  uint64_t startup_ms = 0;   // exec received -> interpreter ready with the code
  uint64_t duration_ms = 0;  // the code's own time, from there to the end
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  bool state_lost = false;  // session exec: the interpreter had to be restarted
};

// daemon -> agent: stop the running exec as at its timeout (interrupt,
// grace, kill), because its caller went away. Answered by its ExecDone.
struct Cancel {
  uint64_t id = 0;
};

// daemon -> agent, after a booted VM's hello when the operator configured
// extra CA certificates: the guest's CA store takes them before any code
// runs (a snapshot template's clones have them already). Answered by Ack.
struct Trust {
  std::string pem;
};

using Message = std::variant<Run, Output, Finished, ErrorReply, Hello, Exec, ExecDone, Ping, Pong, StatusRequest,
                             Status, Resume, SnapshotsRequest, SnapshotList, SessionCreate, SessionList,
                             SessionListRequest, SessionExec, SessionClose, Ack, FileWrite, FileChunk, FileRead,
                             FileDone, FileListRequest, FileList, Cancel, ImagesRequest, ImageList,
                             MetricsRequest, MetricsText, SessionNetwork, LayersRequest, LayerList, Trust, Drain>;

// The request id a message carries (0 for those without one: hello, ping...).
uint64_t request_id_of(const Message& message);
// The wire name of a message's type ("run", "result", ...).
std::string_view type_name(const Message& message);

// Payload only (no length prefix).
std::string encode(const Message& message);
// Strict, bounded decode of one payload. Strings are copied out of the
// payload only for fields that are read; everything else is bounded before
// any allocation.
Result<Message> decode(std::string_view payload);

}  // namespace sandbox::proto

// ---------------------------------------------------------------- the tables

namespace sandbox::schema {

using namespace sandbox::limits;

template <>
struct EnumNames<Language> {
  static std::string_view name(Language l) { return language_name(l); }
  static std::optional<Language> parse(std::string_view s);
};
template <>
struct EnumNames<Stream> {
  static std::string_view name(Stream s) { return stream_name(s); }
  static std::optional<Stream> parse(std::string_view s);
};
template <>
struct EnumNames<ErrorCode> {
  static std::string_view name(ErrorCode c) { return error_code_name(c); }
  static std::optional<ErrorCode> parse(std::string_view s) { return error_code_from_name(s); }
};

constexpr uint64_t kU32 = UINT32_MAX;

template <>
struct Schema<PortMapping> {
  static constexpr auto fields = std::tuple{field("internal", &PortMapping::internal, 65535),
                                            field("external", &PortMapping::external, 65535),
                                            field("unix_socket", &PortMapping::unix_socket)};
};
// Allowlist entries are names: text, each at most kMaxDomainBytes plus ":port".
constexpr Field<NetworkRequest, std::vector<std::string>, kText> kAllowedDomains{
    "allowed_domains", &NetworkRequest::allowed_domains, kMaxAllowedDomains};
template <>
struct Schema<NetworkRequest> {
  static constexpr auto fields = std::tuple{
      field("network", &NetworkRequest::network),
      kAllowedDomains,
      field("expose_ports", &NetworkRequest::expose_ports, kMaxExposedPorts),
  };
};
template <>
struct Schema<ExposedPort> {
  static constexpr auto fields = std::tuple{
      field("internal", &ExposedPort::internal, 65535), field("external", &ExposedPort::external, 65535),
      text("host", &ExposedPort::host, kMaxNameBytes), text("url", &ExposedPort::url, kMaxNameBytes)};
};
template <>
struct Schema<NetworkDenial> {
  static constexpr auto fields = std::tuple{text("host", &NetworkDenial::host, kMaxNameBytes),
                                            field("port", &NetworkDenial::port, 65535),
                                            text("reason", &NetworkDenial::reason, kMaxNameBytes)};
};
template <>
struct Schema<NetworkStats> {
  static constexpr auto fields = std::tuple{
      field("connections", &NetworkStats::connections), field("bytes_in", &NetworkStats::bytes_in),
      field("bytes_out", &NetworkStats::bytes_out), field("denied", &NetworkStats::denied, kMaxNetworkDenials)};
};
constexpr Field<SessionInfo, std::vector<std::string>, kText> kSessionDomains{
    "allowed_domains", &SessionInfo::allowed_domains, kMaxAllowedDomains};

constexpr Field<RunRequest, std::vector<std::string>, kText> kRunPackages{"packages", &RunRequest::packages,
                                                                          kMaxPackages};
template <>
struct Schema<LayerUse> {
  static constexpr auto fields = std::tuple{
      text("key", &LayerUse::key, proto::kMaxLayerKeyBytes),
      text("cache", &LayerUse::cache, kMaxNameBytes),
      field("build_ms", &LayerUse::build_ms),
  };
};
template <>
struct Schema<RunRequest> {
  static constexpr auto fields = std::tuple{
      field("language", &RunRequest::language),
      field("code", &RunRequest::code, kMaxCodeBytes),
      field("env", &RunRequest::env, kMaxEnvVars),
      field("timeout_ms", &RunRequest::timeout, kU32),
      field("memory_mb", &RunRequest::memory_mb),
      embed(&RunRequest::net),
      kRunPackages,
  };
};
template <>
struct Schema<Timing> {
  static constexpr auto fields = std::tuple{
      field("setup_ms", &Timing::setup_ms),     field("boot_ms", &Timing::boot_ms),
      field("startup_ms", &Timing::startup_ms), field("execute_ms", &Timing::execute_ms),
      field("total_ms", &Timing::total_ms),
  };
};
template <>
struct Schema<RunResult> {
  static constexpr auto fields = std::tuple{
      field("language", &RunResult::language),
      field("stdout", &RunResult::stdout_data, kMaxStdoutBytes),
      field("stderr", &RunResult::stderr_data, kMaxStderrBytes),
      field("stdout_truncated", &RunResult::stdout_truncated),
      field("stderr_truncated", &RunResult::stderr_truncated),
      field("exit_code", &RunResult::exit_code),
      field("signal", &RunResult::signal),
      field("timed_out", &RunResult::timed_out),
      field("execution_time_ms", &RunResult::execution_time_ms),
      field("cpu_time_ms", &RunResult::cpu_time_ms),
      field("memory_peak_mb", &RunResult::memory_peak_mb),
      field("timing", &RunResult::timing),
      field("warm_pool_hit", &RunResult::warm_pool_hit),
      text("accelerator", &RunResult::accelerator, kMaxNameBytes),
      text("vm_start", &RunResult::vm_start, kMaxNameBytes),
      field("state_lost", &RunResult::state_lost),
      field("exposed_ports", &RunResult::exposed_ports, kMaxExposedPorts),
      field("network", &RunResult::network),
      field("layer", &RunResult::layer),
  };
};
template <>
struct Schema<PoolInfo> {
  static constexpr auto fields = std::tuple{
      field("language", &PoolInfo::language), field("size", &PoolInfo::target),
      field("ready", &PoolInfo::ready),       field("booting", &PoolInfo::booting),
      field("hits", &PoolInfo::hits),         field("misses", &PoolInfo::misses),
      text("layer", &PoolInfo::layer, proto::kMaxLayerKeyBytes),
  };
};
template <>
struct Schema<DaemonStatus> {
  static constexpr auto fields = std::tuple{
      text("version", &DaemonStatus::version, kMaxNameBytes),
      text("accelerator", &DaemonStatus::accelerator, kMaxNameBytes),
      text("accelerator_reason", &DaemonStatus::accelerator_reason, kMaxMessageBytes),
      field("vms", &DaemonStatus::vms),
      field("max_vms", &DaemonStatus::max_vms),
      field("runs_active", &DaemonStatus::runs_active),
      field("runs_queued", &DaemonStatus::runs_queued),
      field("sessions", &DaemonStatus::sessions),
      field("runs_per_uid", &DaemonStatus::runs_per_uid),
      field("pool", &DaemonStatus::pool, proto::kMaxPoolEntries),
      text("host_limits", &DaemonStatus::host_limits, kMaxMessageBytes),
      field("draining", &DaemonStatus::draining),
  };
};
template <>
struct Schema<SnapshotInfo> {
  static constexpr auto fields = std::tuple{
      text("key", &SnapshotInfo::key, kMaxNameBytes),
      field("language", &SnapshotInfo::language),
      field("memory_mb", &SnapshotInfo::memory_mb),
      field("bytes", &SnapshotInfo::bytes),
  };
};
template <>
struct Schema<ImageFileInfo> {
  static constexpr auto fields = std::tuple{
      text("role", &ImageFileInfo::role, kMaxNameBytes),
      text("file", &ImageFileInfo::file, kMaxPathBytes),
      text("sha256", &ImageFileInfo::sha256, proto::kSha256HexBytes),
  };
};
template <>
struct Schema<PackageInfo> {
  static constexpr auto fields = std::tuple{
      text("name", &PackageInfo::name, kMaxNameBytes),
      text("version", &PackageInfo::version, kMaxNameBytes),
  };
};
template <>
struct Schema<ToolInfo> {
  static constexpr auto fields = std::tuple{
      text("name", &ToolInfo::name, kMaxNameBytes),
      text("package", &ToolInfo::package, kMaxNameBytes),
      text("version", &ToolInfo::version, kMaxNameBytes),
  };
};
template <>
struct Schema<ImagesInfo> {
  static constexpr auto fields = std::tuple{
      text("directory", &ImagesInfo::directory, kMaxMessageBytes),
      field("images", &ImagesInfo::images, proto::kMaxImageEntries),
      text("kernel_release", &ImagesInfo::kernel_release, kMaxNameBytes),
      text("description", &ImagesInfo::description, kMaxMessageBytes),
      field("tools", &ImagesInfo::tools, proto::kMaxToolEntries),
      field("packages", &ImagesInfo::packages, proto::kMaxPackageEntries),
      text("packages_sha256", &ImagesInfo::packages_sha256, proto::kSha256HexBytes),
  };
};
constexpr Field<SessionOptions, std::vector<std::string>, kText> kSessionPackages{
    "packages", &SessionOptions::packages, kMaxPackages};
template <>
struct Schema<SessionOptions> {
  static constexpr auto fields = std::tuple{
      field("language", &SessionOptions::language),
      field("env", &SessionOptions::env, kMaxEnvVars),
      field("timeout_ms", &SessionOptions::timeout, kU32),
      field("memory_mb", &SessionOptions::memory_mb),
      field("idle_timeout_ms", &SessionOptions::idle_timeout, kU32),
      embed(&SessionOptions::net),
      kSessionPackages,
  };
};
template <>
struct Schema<SessionInfo> {
  static constexpr auto fields = std::tuple{
      text("session", &SessionInfo::id, kMaxSessionIdBytes),
      field("language", &SessionInfo::language),
      field("memory_mb", &SessionInfo::memory_mb),
      field("idle_timeout_ms", &SessionInfo::idle_timeout, kU32),
      field("exec_count", &SessionInfo::exec_count),
      field("created_unix_ms", &SessionInfo::created_unix_ms),
      field("last_activity_unix_ms", &SessionInfo::last_activity_unix_ms),
      text("vm_start", &SessionInfo::vm_start, kMaxNameBytes),
      field("exposed_ports", &SessionInfo::exposed_ports, kMaxExposedPorts),
      kSessionDomains,
      field("layer", &SessionInfo::layer),
  };
};
constexpr Field<LayerInfo, std::vector<std::string>, kText> kLayerPackages{"packages", &LayerInfo::packages,
                                                                           kMaxPackages};
constexpr Field<LayerInfo, std::vector<std::string>, kText> kLayerLock{"lock", &LayerInfo::lock,
                                                                       proto::kMaxLockEntries};
template <>
struct Schema<LayerInfo> {
  static constexpr auto fields = std::tuple{
      text("key", &LayerInfo::key, proto::kMaxLayerKeyBytes),
      field("language", &LayerInfo::language),
      kLayerPackages,
      kLayerLock,
      field("bytes", &LayerInfo::bytes),
      field("last_used_unix_ms", &LayerInfo::last_used_unix_ms),
      field("users", &LayerInfo::users),
      field("building", &LayerInfo::building),
  };
};
template <>
struct Schema<FileEntry> {
  static constexpr auto fields = std::tuple{
      field("name", &FileEntry::name, kMaxPathBytes),
      field("is_dir", &FileEntry::is_dir),
      field("size", &FileEntry::size),
  };
};
template <>
struct Schema<FileListing> {
  static constexpr auto fields = std::tuple{
      field("entries", &FileListing::entries, kMaxListEntries),
      field("truncated", &FileListing::truncated),
  };
};

// Wire messages: `type` names them on the wire.
template <>
struct Schema<proto::Run> {
  static constexpr std::string_view type = "run";
  static constexpr auto fields = std::tuple{field("id", &proto::Run::id), embed(&proto::Run::request)};
};
template <>
struct Schema<proto::Output> {
  static constexpr std::string_view type = "output";
  static constexpr auto fields = std::tuple{field("id", &proto::Output::id), field("stream", &proto::Output::stream),
                                            field("data", &proto::Output::data, kMaxFrameBytes)};
};
template <>
struct Schema<proto::Finished> {
  static constexpr std::string_view type = "result";
  static constexpr auto fields = std::tuple{field("id", &proto::Finished::id), embed(&proto::Finished::result)};
};
template <>
struct Schema<proto::ErrorReply> {
  static constexpr std::string_view type = "error";
  static constexpr auto fields = std::tuple{field("id", &proto::ErrorReply::id), field("code", &proto::ErrorReply::code),
                                            text("message", &proto::ErrorReply::message, kMaxMessageBytes)};
};
template <>
struct Schema<proto::StatusRequest> {
  static constexpr std::string_view type = "status_request";
  static constexpr auto fields = std::tuple{field("id", &proto::StatusRequest::id)};
};
template <>
struct Schema<proto::Status> {
  static constexpr std::string_view type = "status";
  static constexpr auto fields = std::tuple{field("id", &proto::Status::id), embed(&proto::Status::status)};
};
template <>
struct Schema<proto::SnapshotsRequest> {
  static constexpr std::string_view type = "snapshots_request";
  static constexpr auto fields =
      std::tuple{field("id", &proto::SnapshotsRequest::id), field("drop", &proto::SnapshotsRequest::drop)};
};
template <>
struct Schema<proto::SnapshotList> {
  static constexpr std::string_view type = "snapshot_list";
  static constexpr auto fields = std::tuple{field("id", &proto::SnapshotList::id),
                                            field("snapshots", &proto::SnapshotList::snapshots, proto::kMaxSnapshotEntries)};
};
template <>
struct Schema<proto::ImagesRequest> {
  static constexpr std::string_view type = "images_request";
  static constexpr auto fields = std::tuple{field("id", &proto::ImagesRequest::id)};
};
template <>
struct Schema<proto::ImageList> {
  static constexpr std::string_view type = "image_list";
  static constexpr auto fields = std::tuple{field("id", &proto::ImageList::id), embed(&proto::ImageList::images)};
};
template <>
struct Schema<proto::LayersRequest> {
  static constexpr std::string_view type = "layers_request";
  static constexpr auto fields =
      std::tuple{field("id", &proto::LayersRequest::id), text("drop", &proto::LayersRequest::drop, proto::kMaxLayerKeyBytes),
                 field("drop_all", &proto::LayersRequest::drop_all)};
};
template <>
struct Schema<proto::LayerList> {
  static constexpr std::string_view type = "layer_list";
  static constexpr auto fields = std::tuple{field("id", &proto::LayerList::id),
                                            field("layers", &proto::LayerList::layers, proto::kMaxLayerEntries)};
};
template <>
struct Schema<proto::MetricsRequest> {
  static constexpr std::string_view type = "metrics_request";
  static constexpr auto fields = std::tuple{field("id", &proto::MetricsRequest::id)};
};
template <>
struct Schema<proto::Drain> {
  static constexpr std::string_view type = "drain";
  static constexpr auto fields = std::tuple{field("id", &proto::Drain::id),
                                            field("deadline_ms", &proto::Drain::deadline_ms)};
};
template <>
struct Schema<proto::MetricsText> {
  static constexpr std::string_view type = "metrics";
  static constexpr auto fields = std::tuple{field("id", &proto::MetricsText::id),
                                            text("text", &proto::MetricsText::text, proto::kMaxMetricsBytes)};
};
template <>
struct Schema<proto::SessionCreate> {
  static constexpr std::string_view type = "session_create";
  static constexpr auto fields =
      std::tuple{field("id", &proto::SessionCreate::id), embed(&proto::SessionCreate::options)};
};
template <>
struct Schema<proto::SessionList> {
  static constexpr std::string_view type = "session_list";
  static constexpr auto fields = std::tuple{field("id", &proto::SessionList::id),
                                            field("sessions", &proto::SessionList::sessions, proto::kMaxSessionEntries)};
};
template <>
struct Schema<proto::SessionListRequest> {
  static constexpr std::string_view type = "session_list_request";
  static constexpr auto fields = std::tuple{field("id", &proto::SessionListRequest::id)};
};
template <>
struct Schema<proto::SessionExec> {
  static constexpr std::string_view type = "session_exec";
  static constexpr auto fields = std::tuple{
      field("id", &proto::SessionExec::id), text("session", &proto::SessionExec::session, kMaxSessionIdBytes),
      field("code", &proto::SessionExec::code, kMaxCodeBytes), field("timeout_ms", &proto::SessionExec::timeout_ms)};
};
template <>
struct Schema<proto::SessionClose> {
  static constexpr std::string_view type = "session_close";
  static constexpr auto fields = std::tuple{field("id", &proto::SessionClose::id),
                                            text("session", &proto::SessionClose::session, kMaxSessionIdBytes)};
};
constexpr Field<proto::SessionNetwork, std::vector<std::string>, kText> kSessionNetworkDomains{
    "allowed_domains", &proto::SessionNetwork::allowed_domains, kMaxAllowedDomains};
template <>
struct Schema<proto::SessionNetwork> {
  static constexpr std::string_view type = "session_network";
  static constexpr auto fields = std::tuple{field("id", &proto::SessionNetwork::id),
                                            text("session", &proto::SessionNetwork::session, kMaxSessionIdBytes),
                                            field("network", &proto::SessionNetwork::network), kSessionNetworkDomains};
};
template <>
struct Schema<proto::Ack> {
  static constexpr std::string_view type = "ack";
  static constexpr auto fields = std::tuple{field("id", &proto::Ack::id)};
};
template <>
struct Schema<proto::FileWrite> {
  static constexpr std::string_view type = "file_write";
  static constexpr auto fields = std::tuple{
      field("id", &proto::FileWrite::id), text("session", &proto::FileWrite::session, kMaxSessionIdBytes),
      field("path", &proto::FileWrite::path, kMaxPathBytes), field("size", &proto::FileWrite::size, kMaxFileBytes),
      field("executable", &proto::FileWrite::executable)};
};
template <>
struct Schema<proto::FileChunk> {
  static constexpr std::string_view type = "file_chunk";
  static constexpr auto fields =
      std::tuple{field("id", &proto::FileChunk::id), field("data", &proto::FileChunk::data, kMaxFileChunkWireBytes)};
};
template <>
struct Schema<proto::FileRead> {
  static constexpr std::string_view type = "file_read";
  static constexpr auto fields =
      std::tuple{field("id", &proto::FileRead::id), text("session", &proto::FileRead::session, kMaxSessionIdBytes),
                 field("path", &proto::FileRead::path, kMaxPathBytes)};
};
template <>
struct Schema<proto::FileDone> {
  static constexpr std::string_view type = "file_done";
  static constexpr auto fields =
      std::tuple{field("id", &proto::FileDone::id), field("size", &proto::FileDone::size, kMaxFileBytes)};
};
template <>
struct Schema<proto::FileListRequest> {
  static constexpr std::string_view type = "file_list_request";
  static constexpr auto fields = std::tuple{field("id", &proto::FileListRequest::id),
                                            text("session", &proto::FileListRequest::session, kMaxSessionIdBytes),
                                            field("path", &proto::FileListRequest::path, kMaxPathBytes)};
};
template <>
struct Schema<proto::FileList> {
  static constexpr std::string_view type = "file_list";
  static constexpr auto fields = std::tuple{field("id", &proto::FileList::id), embed(&proto::FileList::listing)};
};
template <>
struct Schema<proto::Hello> {
  static constexpr std::string_view type = "hello";
  static constexpr auto fields =
      std::tuple{field("version", &proto::Hello::version), text("kernel", &proto::Hello::kernel, kMaxNameBytes),
                 text("prestarted", &proto::Hello::prestarted, kMaxNameBytes)};
};
template <>
struct Schema<proto::Resume> {
  static constexpr std::string_view type = "resume";
  static constexpr auto fields = std::tuple{
      field("seed", &proto::Resume::seed, proto::kMaxSeedBytes), field("realtime_ns", &proto::Resume::realtime_ns),
      text("hostname", &proto::Resume::hostname, proto::kMaxHostnameBytes), field("warm_up", &proto::Resume::warm_up),
      field("pids_max", &proto::Resume::pids_max)};
};
template <>
struct Schema<proto::Ping> {
  static constexpr std::string_view type = "ping";
  static constexpr auto fields = std::tuple{field("seq", &proto::Ping::seq)};
};
template <>
struct Schema<proto::Pong> {
  static constexpr std::string_view type = "pong";
  static constexpr auto fields = std::tuple{field("seq", &proto::Pong::seq)};
};
template <>
struct Schema<proto::Exec> {
  static constexpr std::string_view type = "exec";
  static constexpr auto fields = std::tuple{
      field("id", &proto::Exec::id),
      field("language", &proto::Exec::language),
      field("code", &proto::Exec::code, kMaxCodeBytes),
      field("env", &proto::Exec::env, kMaxEnvVars),
      field("code_env", &proto::Exec::code_env, kMaxEnvVars),
      field("timeout_ms", &proto::Exec::timeout_ms),
      field("startup_timeout_ms", &proto::Exec::startup_timeout_ms),
      field("grace_ms", &proto::Exec::grace_ms),
      field("stdout_limit", &proto::Exec::stdout_limit),
      field("stderr_limit", &proto::Exec::stderr_limit),
      field("pids_max", &proto::Exec::pids_max),
      field("session", &proto::Exec::session),
  };
};
template <>
struct Schema<proto::ExecDone> {
  static constexpr std::string_view type = "exec_done";
  static constexpr auto fields = std::tuple{
      field("id", &proto::ExecDone::id),
      field("exit_code", &proto::ExecDone::exit_code),
      field("signal", &proto::ExecDone::signal),
      field("timed_out", &proto::ExecDone::timed_out),
      field("startup_ms", &proto::ExecDone::startup_ms),
      field("duration_ms", &proto::ExecDone::duration_ms),
      field("stdout_truncated", &proto::ExecDone::stdout_truncated),
      field("stderr_truncated", &proto::ExecDone::stderr_truncated),
      field("state_lost", &proto::ExecDone::state_lost),
  };
};
template <>
struct Schema<proto::Trust> {
  static constexpr std::string_view type = "trust";
  static constexpr auto fields = std::tuple{text("pem", &proto::Trust::pem, proto::kMaxTrustBytes)};
};
template <>
struct Schema<proto::Cancel> {
  static constexpr std::string_view type = "cancel";
  static constexpr auto fields = std::tuple{field("id", &proto::Cancel::id)};
};

}  // namespace sandbox::schema
