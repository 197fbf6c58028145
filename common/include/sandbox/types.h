// The values libsandbox, the daemon and the agent exchange: what a run
// asks for and what it returns, sessions, status, images. Each is described once
// more, field by field, in common/protocol.h (the wire table); encoder,
// decoder, JSON and D-Bus views all come from that table.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sandbox {

enum class Language : uint8_t { python, javascript, raw };
// "python", "javascript", "raw".
std::string_view language_name(Language language);
// The canonical names plus the usual aliases (py, js, node, sh, bash...).
std::optional<Language> parse_language(std::string_view name);

enum class Stream : uint8_t { out, err };
std::string_view stream_name(Stream stream);  // "stdout", "stderr"

using EnvList = std::vector<std::pair<std::string, std::string>>;

// A guest TCP port offered on the host's 127.0.0.1 (SPEC F13): `external`
// 0 lets the daemon pick a free port.
// `unix_socket`: a Unix socket owned by the caller (mode 0600) instead of
// a TCP port, for hosts where other local users must not reach it.
struct PortMapping {
  uint32_t internal = 0;
  uint32_t external = 0;
  bool unix_socket = false;
};

// Network asked for by a run or a session (SPEC F11-F13). All empty: no
// network at all. `network` alone: the operator's default allowlist.
struct NetworkRequest {
  bool network = false;
  // "example.org", "*.example.com", "api.example.org:8443".
  std::vector<std::string> allowed_domains;
  std::vector<PortMapping> expose_ports;
};

// A port mapping as set up: 127.0.0.1 and a TCP port, or a Unix socket.
struct ExposedPort {
  uint32_t internal = 0;
  uint32_t external = 0;  // 0 for a Unix socket
  std::string host;  // "127.0.0.1", or "unix"
  std::string url;   // "http://127.0.0.1:<external>", or "unix:<path>"
};

// A connection or lookup the policy refused.
struct NetworkDenial {
  std::string host;  // name or address
  uint32_t port = 0;  // 0 for a DNS lookup
  std::string reason;
};

// What a VM's network did while a run or exec went on.
struct NetworkStats {
  uint64_t connections = 0;  // streams opened, both directions
  uint64_t bytes_in = 0;     // to the guest
  uint64_t bytes_out = 0;    // from the guest
  std::vector<NetworkDenial> denied;  // the first kMaxNetworkDenials
};

struct RunRequest {
  Language language = Language::python;
  std::string code;
  EnvList env;
  // Measured on the code: the clock starts when the interpreter is up and
  // has the code; its start-up is bounded and reported on its own.
  std::chrono::milliseconds timeout{30'000};
  uint32_t memory_mb = 256;
  NetworkRequest net;
  // "name==1.2.3" (Python) or "name@1.2.3" (JavaScript), installed once in a
  // builder VM and attached as a read-only layer (SPEC F14).
  std::vector<std::string> packages;
};

// The package layer a run or session used: its cache key, how it was
// obtained ("hit", "built", "joined" another request's build, "fetched"
// from the nodes' shared store) and what the build or fetch cost (0 on a
// hit). Empty key: no packages.
struct LayerUse {
  std::string key;
  std::string cache;
  uint64_t build_ms = 0;
};

struct Timing {
  uint64_t setup_ms = 0;    // request accepted -> VM process started (or taken warm)
  uint64_t boot_ms = 0;     // VM process started -> agent ready
  uint64_t startup_ms = 0;  // exec sent -> interpreter ready for the code
  uint64_t execute_ms = 0;  // code handed over -> its process tree gone
  uint64_t total_ms = 0;    // request accepted -> result
};

struct RunResult {
  Language language = Language::python;  // what ran (a session's own language for its execs)
  std::string stdout_data;  // bytes, exactly as written by the code
  std::string stderr_data;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  int32_t exit_code = 0;
  int32_t signal = 0;  // 0 unless the process was killed by a signal
  bool timed_out = false;
  uint64_t execution_time_ms = 0;  // wall time of the code, measured in the guest
  uint64_t cpu_time_ms = 0;        // host CPU time of the VM while the code ran
  uint64_t memory_peak_mb = 0;     // peak host memory of the VM
  Timing timing;
  bool warm_pool_hit = false;
  std::string accelerator;  // "kvm" or "tcg"
  // How the VM came to be: "pool", "snapshot", "boot", "boot (snapshot failed)".
  std::string vm_start;
  // Session execs: the interpreter died during this exec (os._exit, a
  // crash, a timeout it ignored) and was restarted; earlier state is gone.
  bool state_lost = false;
  std::vector<ExposedPort> exposed_ports;
  NetworkStats network;
  LayerUse layer;
};

struct PoolInfo {
  Language language = Language::python;
  uint32_t target = 0;   // configured warm VMs
  uint32_t ready = 0;    // booted, interpreter waiting
  uint32_t booting = 0;
  uint64_t hits = 0;     // runs served warm
  uint64_t misses = 0;   // runs that had to boot
  std::string layer;     // a pool_layers lane: its package layer's key
};

struct DaemonStatus {
  std::string version;
  std::string accelerator;
  std::string accelerator_reason;
  uint32_t vms = 0;  // QEMU processes alive, pool included
  uint32_t max_vms = 0;
  uint32_t runs_active = 0;
  uint32_t runs_queued = 0;
  uint32_t sessions = 0;  // open sessions, all users
  // Runs one uid may have running and queued: more at once get `capacity`.
  uint32_t runs_per_uid = 0;
  std::vector<PoolInfo> pool;
  // Per-VM cgroup limits on the host, or why there are none.
  std::string host_limits;
  // Taking no new runs or sessions (`sandboxctl drain`, or shutting down).
  bool draining = false;
};

struct SnapshotInfo {
  std::string key;
  Language language = Language::python;
  uint32_t memory_mb = 0;
  uint64_t bytes = 0;  // on disk
};

// One file the daemon boots VMs from, as its manifest lists it.
struct ImageFileInfo {
  std::string role;    // "kernel", "initrd" or "rootfs"
  std::string file;    // name in the images directory
  std::string sha256;  // the manifest's, checked against the file at start-up
};

// A Debian package in the root image, from the root's own package database.
struct PackageInfo {
  std::string name;
  std::string version;  // Debian's, e.g. "3.11.2-6+deb12u6"
};

// A program code can call, and the package that provides it.
struct ToolInfo {
  std::string name;     // "python3", "nodejs", "git"...
  std::string package;  // "python3.11", "nodejs", "git"...
  std::string version;
};

// What the daemon's VMs run: the images, their kernel, and what is inside
// the root.
struct ImagesInfo {
  std::string directory;
  std::vector<ImageFileInfo> images;
  std::string kernel_release;  // the guest's `uname -r`
  std::string description;     // the manifest's comment line
  std::vector<ToolInfo> tools;  // interpreters first, then the everyday tools
  std::vector<PackageInfo> packages;  // every package in the root, by name
  std::string packages_sha256;  // of the package list, as verified
};

struct SessionOptions {
  Language language = Language::python;
  EnvList env;                                       // the interpreter's, for the whole session
  std::chrono::milliseconds timeout{30'000};         // each exec's default
  uint32_t memory_mb = 256;
  std::chrono::milliseconds idle_timeout{300'000};  // closed after this long without a call
  NetworkRequest net;
  std::vector<std::string> packages;  // as RunRequest::packages
};

struct SessionInfo {
  std::string id;
  Language language = Language::python;
  uint32_t memory_mb = 0;
  std::chrono::milliseconds idle_timeout{0};
  uint64_t exec_count = 0;
  uint64_t created_unix_ms = 0;
  uint64_t last_activity_unix_ms = 0;
  std::string vm_start;  // how its VM came to be, as in a run result
  std::vector<ExposedPort> exposed_ports;
  std::vector<std::string> allowed_domains;  // the egress policy in force
  LayerUse layer;  // the session's package layer, if it asked for packages
};

// One package layer in the daemon's cache, or one being built.
struct LayerInfo {
  std::string key;
  Language language = Language::python;
  std::vector<std::string> packages;  // the canonical request
  // Every installed package, transitive ones too: "name==version sha256:..."
  // (Python) or "name@version sha512-..." (npm), as the installer resolved it.
  std::vector<std::string> lock;
  uint64_t bytes = 0;
  uint64_t last_used_unix_ms = 0;
  uint32_t users = 0;      // runs and sessions attached now
  bool building = false;   // a build in progress (no lock or size yet)
};

struct FileEntry {
  std::string name;
  bool is_dir = false;
  uint64_t size = 0;  // regular files; 0 otherwise
};

struct FileListing {
  std::vector<FileEntry> entries;
  // More entries than one listing returns (limits::kMaxListEntries).
  bool truncated = false;
};

}  // namespace sandbox
