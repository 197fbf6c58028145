// msgpack encoding of the messages in protocol.h.
#include <msgpack.hpp>

#include <algorithm>
#include <array>
#include <limits>

#include "common/limits.h"
#include "common/protocol.h"

namespace sandbox::proto {
namespace {

constexpr std::array<std::string_view, 3> kLanguages = {"python", "javascript", "raw"};
// Entropy handed to a restored guest; the kernel takes at most 256 bytes' worth.
constexpr size_t kMaxSeedBytes = 256;
// Snapshots listed at once (the cache holds a few per language).
constexpr size_t kMaxSnapshotEntries = 512;
// One pool per language; a status never lists more.
constexpr size_t kMaxPoolEntries = 8;
// Sessions listed at once: far above any per-user limit.
constexpr size_t kMaxSessionEntries = 256;

using Packer = msgpack::packer<msgpack::sbuffer>;

void put_str(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}
void put_bin(Packer& p, std::string_view s) {
  p.pack_bin(static_cast<uint32_t>(s.size()));
  p.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
}
void put_env(Packer& p, const EnvList& env) {
  p.pack_map(static_cast<uint32_t>(env.size()));
  for (const auto& [k, v] : env) {
    put_str(p, k);
    put_str(p, v);
  }
}
void header(Packer& p, std::string_view type, uint32_t fields) {
  p.pack_map(fields + 1);
  put_str(p, "type");
  put_str(p, type);
}

struct Encoder {
  Packer& p;
  template <class Job>
  void job(const Job& m) {
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "language"), put_str(p, language_name(m.language));
    put_str(p, "code"), put_bin(p, m.code);
    put_str(p, "env"), put_env(p, m.env);
    put_str(p, "timeout_ms"), p.pack(m.timeout_ms);
  }
  void operator()(const RunRequest& m) {
    header(p, "run", 6);
    job(m);
    put_str(p, "memory_mb"), p.pack(m.memory_mb);
  }
  void operator()(const Output& m) {
    header(p, "output", 3);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "stream"), put_str(p, stream_name(m.stream));
    put_str(p, "data"), put_bin(p, m.data);
  }
  void operator()(const RunResult& m) {
    header(p, "result", 16);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "stdout"), put_bin(p, m.stdout_data);
    put_str(p, "stderr"), put_bin(p, m.stderr_data);
    put_str(p, "stdout_truncated"), p.pack(m.stdout_truncated);
    put_str(p, "stderr_truncated"), p.pack(m.stderr_truncated);
    put_str(p, "exit_code"), p.pack(m.exit_code);
    put_str(p, "signal"), p.pack(m.signal);
    put_str(p, "timed_out"), p.pack(m.timed_out);
    put_str(p, "execution_time_ms"), p.pack(m.execution_time_ms);
    put_str(p, "timing");
    p.pack_map(4);
    put_str(p, "setup_ms"), p.pack(m.timing.setup_ms);
    put_str(p, "boot_ms"), p.pack(m.timing.boot_ms);
    put_str(p, "execute_ms"), p.pack(m.timing.execute_ms);
    put_str(p, "total_ms"), p.pack(m.timing.total_ms);
    put_str(p, "cpu_time_ms"), p.pack(m.cpu_time_ms);
    put_str(p, "memory_peak_mb"), p.pack(m.memory_peak_mb);
    put_str(p, "warm_pool_hit"), p.pack(m.warm_pool_hit);
    put_str(p, "accelerator"), put_str(p, m.accelerator);
    put_str(p, "vm_start"), put_str(p, m.vm_start);
    put_str(p, "state_lost"), p.pack(m.state_lost);
  }
  void operator()(const ErrorReply& m) {
    header(p, "error", 3);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "code"), put_str(p, error_code_name(m.code));
    put_str(p, "message"), put_str(p, m.message);
  }
  void operator()(const Hello& m) {
    header(p, "hello", 3);
    put_str(p, "version"), p.pack(m.version);
    put_str(p, "kernel"), put_str(p, m.kernel);
    put_str(p, "prestarted"), put_str(p, m.prestarted);
  }
  void operator()(const SnapshotsRequest& m) {
    header(p, "snapshots_request", 2);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "drop"), p.pack(m.drop);
  }
  void operator()(const SnapshotList& m) {
    header(p, "snapshot_list", 2);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "snapshots");
    p.pack_array(static_cast<uint32_t>(m.snapshots.size()));
    for (const auto& e : m.snapshots) {
      p.pack_map(4);
      put_str(p, "key"), put_str(p, e.key);
      put_str(p, "language"), put_str(p, language_name(e.language));
      put_str(p, "memory_mb"), p.pack(e.memory_mb);
      put_str(p, "bytes"), p.pack(e.bytes);
    }
  }
  void operator()(const Resume& m) {
    header(p, "resume", 4);
    put_str(p, "seed"), put_bin(p, m.seed);
    put_str(p, "realtime_ns"), p.pack(m.realtime_ns);
    put_str(p, "hostname"), put_str(p, m.hostname);
    put_str(p, "warm_up"), p.pack(m.warm_up);
  }
  void operator()(const Ping& m) {
    header(p, "ping", 1);
    put_str(p, "seq"), p.pack(m.seq);
  }
  void operator()(const Pong& m) {
    header(p, "pong", 1);
    put_str(p, "seq"), p.pack(m.seq);
  }
  void operator()(const StatusRequest& m) {
    header(p, "status_request", 1);
    put_str(p, "id"), p.pack(m.id);
  }
  void operator()(const Status& m) {
    header(p, "status", 11);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "version"), put_str(p, m.version);
    put_str(p, "accelerator"), put_str(p, m.accelerator);
    put_str(p, "accelerator_reason"), put_str(p, m.accelerator_reason);
    put_str(p, "vms"), p.pack(m.vms);
    put_str(p, "max_vms"), p.pack(m.max_vms);
    put_str(p, "runs_active"), p.pack(m.runs_active);
    put_str(p, "runs_queued"), p.pack(m.runs_queued);
    put_str(p, "sessions"), p.pack(m.sessions);
    put_str(p, "host_limits"), put_str(p, m.host_limits);
    put_str(p, "pool");
    p.pack_array(static_cast<uint32_t>(m.pool.size()));
    for (const auto& e : m.pool) {
      p.pack_map(6);
      put_str(p, "language"), put_str(p, language_name(e.language));
      put_str(p, "target"), p.pack(e.target);
      put_str(p, "ready"), p.pack(e.ready);
      put_str(p, "booting"), p.pack(e.booting);
      put_str(p, "hits"), p.pack(e.hits);
      put_str(p, "misses"), p.pack(e.misses);
    }
  }
  void operator()(const Exec& m) {
    header(p, "exec", 10);
    job(m);
    put_str(p, "grace_ms"), p.pack(m.grace_ms);
    put_str(p, "stdout_limit"), p.pack(m.stdout_limit);
    put_str(p, "stderr_limit"), p.pack(m.stderr_limit);
    put_str(p, "pids_max"), p.pack(m.pids_max);
    put_str(p, "session"), p.pack(m.session);
  }
  void operator()(const ExecDone& m) {
    header(p, "exec_done", 8);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "exit_code"), p.pack(m.exit_code);
    put_str(p, "signal"), p.pack(m.signal);
    put_str(p, "timed_out"), p.pack(m.timed_out);
    put_str(p, "duration_ms"), p.pack(m.duration_ms);
    put_str(p, "stdout_truncated"), p.pack(m.stdout_truncated);
    put_str(p, "stderr_truncated"), p.pack(m.stderr_truncated);
    put_str(p, "state_lost"), p.pack(m.state_lost);
  }
  void operator()(const SessionCreate& m) {
    header(p, "session_create", 6);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "language"), put_str(p, language_name(m.language));
    put_str(p, "env"), put_env(p, m.env);
    put_str(p, "timeout_ms"), p.pack(m.timeout_ms);
    put_str(p, "memory_mb"), p.pack(m.memory_mb);
    put_str(p, "idle_timeout_ms"), p.pack(m.idle_timeout_ms);
  }
  void operator()(const SessionList& m) {
    header(p, "session_list", 2);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "sessions");
    p.pack_array(static_cast<uint32_t>(m.sessions.size()));
    for (const auto& e : m.sessions) {
      p.pack_map(8);
      put_str(p, "session"), put_str(p, e.session);
      put_str(p, "language"), put_str(p, language_name(e.language));
      put_str(p, "memory_mb"), p.pack(e.memory_mb);
      put_str(p, "idle_timeout_ms"), p.pack(e.idle_timeout_ms);
      put_str(p, "exec_count"), p.pack(e.exec_count);
      put_str(p, "created_unix_ms"), p.pack(e.created_unix_ms);
      put_str(p, "last_activity_unix_ms"), p.pack(e.last_activity_unix_ms);
      put_str(p, "vm_start"), put_str(p, e.vm_start);
    }
  }
  void operator()(const SessionListRequest& m) {
    header(p, "session_list_request", 1);
    put_str(p, "id"), p.pack(m.id);
  }
  void operator()(const SessionExec& m) {
    header(p, "session_exec", 4);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "session"), put_str(p, m.session);
    put_str(p, "code"), put_bin(p, m.code);
    put_str(p, "timeout_ms"), p.pack(m.timeout_ms);
  }
  void operator()(const SessionClose& m) {
    header(p, "session_close", 2);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "session"), put_str(p, m.session);
  }
  void operator()(const Ack& m) {
    header(p, "ack", 1);
    put_str(p, "id"), p.pack(m.id);
  }
  void chunks(const std::vector<std::string>& v) {
    put_str(p, "chunks");
    p.pack_array(static_cast<uint32_t>(v.size()));
    for (const auto& c : v) put_bin(p, c);
  }
  void operator()(const FileWrite& m) {
    header(p, "file_write", 6);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "session"), put_str(p, m.session);
    put_str(p, "path"), put_bin(p, m.path);
    put_str(p, "size"), p.pack(m.size);
    put_str(p, "executable"), p.pack(m.executable);
    chunks(m.chunks);
  }
  void operator()(const FileChunk& m) {
    header(p, "file_chunk", 2);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "data"), put_bin(p, m.data);
  }
  void operator()(const FileRead& m) {
    header(p, "file_read", 3);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "session"), put_str(p, m.session);
    put_str(p, "path"), put_bin(p, m.path);
  }
  void operator()(const FileDone& m) {
    header(p, "file_done", 2);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "size"), p.pack(m.size);
  }
  void operator()(const FileContent& m) {
    header(p, "file_content", 3);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "size"), p.pack(m.size);
    chunks(m.chunks);
  }
  void operator()(const FileListRequest& m) {
    header(p, "file_list_request", 3);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "session"), put_str(p, m.session);
    put_str(p, "path"), put_bin(p, m.path);
  }
  void operator()(const FileList& m) {
    header(p, "file_list", 3);
    put_str(p, "id"), p.pack(m.id);
    put_str(p, "entries");
    p.pack_array(static_cast<uint32_t>(m.entries.size()));
    for (const auto& e : m.entries) {
      p.pack_map(3);
      put_str(p, "name"), put_bin(p, e.name);
      put_str(p, "is_dir"), p.pack(e.is_dir);
      put_str(p, "size"), p.pack(e.size);
    }
    put_str(p, "truncated"), p.pack(m.truncated);
  }
};

Error bad(std::string what) { return Error::make(ErrorCode::invalid_argument, "malformed message: " + std::move(what)); }

// Field access over one msgpack map. The first problem is kept; every key
// must be read exactly once, so unknown and duplicate keys are errors.
class Fields {
 public:
  explicit Fields(const msgpack::object& map) {
    if (map.type != msgpack::type::MAP) {
      fail("not a map");
      return;
    }
    for (uint32_t i = 0; i < map.via.map.size; ++i) {
      const auto& kv = map.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) {
        fail("non-string key");
        return;
      }
      std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
      for (const auto& e : entries_)
        if (e.key == key) {
          fail("duplicate key '" + std::string(key) + "'");
          return;
        }
      entries_.push_back({key, &kv.val, false});
    }
  }

  uint64_t u64(std::string_view key, uint64_t max = std::numeric_limits<uint64_t>::max()) {
    const auto* o = take(key);
    if (!o) return 0;
    if (o->type != msgpack::type::POSITIVE_INTEGER) return fail_type(key, "unsigned integer"), 0;
    if (o->via.u64 > max) return fail("'" + std::string(key) + "' out of range"), 0;
    return o->via.u64;
  }
  int32_t i32(std::string_view key) {
    const auto* o = take(key);
    if (!o) return 0;
    if (o->type == msgpack::type::POSITIVE_INTEGER) {
      if (o->via.u64 > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
        return fail("'" + std::string(key) + "' out of range"), 0;
      return static_cast<int32_t>(o->via.u64);
    }
    if (o->type == msgpack::type::NEGATIVE_INTEGER) {
      if (o->via.i64 < std::numeric_limits<int32_t>::min()) return fail("'" + std::string(key) + "' out of range"), 0;
      return static_cast<int32_t>(o->via.i64);
    }
    return fail_type(key, "integer"), 0;
  }
  bool boolean(std::string_view key) {
    const auto* o = take(key);
    if (!o) return false;
    if (o->type != msgpack::type::BOOLEAN) return fail_type(key, "boolean"), false;
    return o->via.boolean;
  }
  // Text or raw bytes: STR and BIN are both accepted for byte fields.
  std::string bytes(std::string_view key, size_t max) {
    const auto* o = take(key);
    if (!o) return {};
    std::string_view v;
    if (o->type == msgpack::type::STR)
      v = {o->via.str.ptr, o->via.str.size};
    else if (o->type == msgpack::type::BIN)
      v = {o->via.bin.ptr, o->via.bin.size};
    else
      return fail_type(key, "bytes"), std::string();
    if (v.size() > max) return fail("'" + std::string(key) + "' longer than " + std::to_string(max) + " bytes"), std::string();
    return std::string(v);
  }
  std::string str(std::string_view key, size_t max) {
    const auto* o = peek(key);
    if (o && o->type != msgpack::type::STR) {
      take(key);
      return fail_type(key, "string"), std::string();
    }
    return bytes(key, max);
  }
  const msgpack::object* map(std::string_view key) {
    const auto* o = take(key);
    if (o && o->type != msgpack::type::MAP) return fail_type(key, "map"), nullptr;
    return o;
  }
  // Elements of an array of at most `max` entries.
  std::vector<const msgpack::object*> array(std::string_view key, size_t max) {
    std::vector<const msgpack::object*> out;
    const auto* o = take(key);
    if (!o) return out;
    if (o->type != msgpack::type::ARRAY) return fail_type(key, "array"), out;
    if (o->via.array.size > max) return fail("'" + std::string(key) + "' has too many entries"), out;
    for (uint32_t i = 0; i < o->via.array.size; ++i) out.push_back(&o->via.array.ptr[i]);
    return out;
  }
  EnvList env(std::string_view key) {
    EnvList out;
    const auto* o = map(key);
    if (!o) return out;
    if (o->via.map.size > limits::kMaxEnvVars) return fail("more than " + std::to_string(limits::kMaxEnvVars) + " env vars"), out;
    for (uint32_t i = 0; i < o->via.map.size; ++i) {
      const auto& kv = o->via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR || kv.val.type != msgpack::type::STR) return fail("env entries must be strings"), out;
      std::string name(kv.key.via.str.ptr, kv.key.via.str.size);
      for (const auto& e : out)
        if (e.first == name) return fail("duplicate env var '" + name + "'"), out;
      out.emplace_back(std::move(name), std::string(kv.val.via.str.ptr, kv.val.via.str.size));
    }
    return out;
  }

  // Reports the first problem, including keys nobody asked for.
  Result<void> finish() {
    if (!error_)
      for (const auto& e : entries_)
        if (!e.used) fail("unknown key '" + std::string(e.key) + "'");
    if (error_) return bad(*error_);
    return ok();
  }
  bool failed() const { return error_.has_value(); }
  void fail(std::string what) {
    if (!error_) error_ = std::move(what);
  }

 private:
  struct Entry {
    std::string_view key;
    const msgpack::object* value;
    bool used;
  };
  const msgpack::object* peek(std::string_view key) {
    for (auto& e : entries_)
      if (e.key == key) return e.value;
    return nullptr;
  }
  const msgpack::object* take(std::string_view key) {
    for (auto& e : entries_)
      if (e.key == key) {
        e.used = true;
        return e.value;
      }
    fail("missing key '" + std::string(key) + "'");
    return nullptr;
  }
  void fail_type(std::string_view key, std::string_view type) {
    fail("'" + std::string(key) + "' is not a " + std::string(type));
  }
  std::vector<Entry> entries_;
  std::optional<std::string> error_;
};

Language read_language(Fields& f, bool* okay) {
  auto name = f.str("language", limits::kMaxNameBytes);
  auto lang = language_from_name(name);
  *okay = lang.has_value() || f.failed();
  return lang.value_or(Language::python);
}

Stream read_stream(Fields& f, bool* okay) {
  auto name = f.str("stream", limits::kMaxNameBytes);
  *okay = f.failed() || name == "stdout" || name == "stderr";
  return name == "stderr" ? Stream::err : Stream::out;
}

// The fields a run request and an exec share: what to run and for how long.
template <class Job>
void read_job(Fields& f, Job& m, bool* okay) {
  m.id = f.u64("id");
  m.language = read_language(f, okay);
  m.code = f.bytes("code", limits::kMaxCodeBytes);
  m.env = f.env("env");
  m.timeout_ms = static_cast<uint32_t>(f.u64("timeout_ms", UINT32_MAX));
}

// File chunks: zstd frames, each at most one chunk's worth once compressed.
std::vector<std::string> read_chunks(Fields& f) {
  std::vector<std::string> out;
  for (const msgpack::object* c : f.array("chunks", limits::kMaxFileChunks)) {
    if (c->type != msgpack::type::BIN && c->type != msgpack::type::STR) {
      f.fail("a chunk is not bytes");
      break;
    }
    uint32_t size = c->type == msgpack::type::BIN ? c->via.bin.size : c->via.str.size;
    const char* ptr = c->type == msgpack::type::BIN ? c->via.bin.ptr : c->via.str.ptr;
    if (size > limits::kMaxFileChunkWireBytes) {
      f.fail("a chunk is too large");
      break;
    }
    out.emplace_back(ptr, size);
  }
  return out;
}

template <class T>
Result<Message> finish(Fields& f, T&& message) {
  if (auto r = f.finish(); !r) return std::move(r).error();
  return Message(std::forward<T>(message));
}

Result<Message> decode_object(const msgpack::object& obj) {
  Fields f(obj);
  auto type = f.str("type", limits::kMaxNameBytes);
  if (f.failed()) return f.finish().error();
  bool okay = true;
  if (type == "run") {
    RunRequest m;
    read_job(f, m, &okay);
    m.memory_mb = static_cast<uint32_t>(f.u64("memory_mb", UINT32_MAX));
    if (!okay) return bad("unknown language");
    return finish(f, std::move(m));
  }
  if (type == "output") {
    Output m;
    m.id = f.u64("id");
    m.stream = read_stream(f, &okay);
    m.data = f.bytes("data", limits::kMaxAgentFrameBytes);
    if (!okay) return bad("unknown stream");
    return finish(f, std::move(m));
  }
  if (type == "result") {
    RunResult m;
    m.id = f.u64("id");
    m.stdout_data = f.bytes("stdout", limits::kMaxClientFrameBytes);
    m.stderr_data = f.bytes("stderr", limits::kMaxClientFrameBytes);
    m.stdout_truncated = f.boolean("stdout_truncated");
    m.stderr_truncated = f.boolean("stderr_truncated");
    m.exit_code = f.i32("exit_code");
    m.signal = f.i32("signal");
    m.timed_out = f.boolean("timed_out");
    m.execution_time_ms = f.u64("execution_time_ms");
    if (const auto* t = f.map("timing")) {
      Fields tf(*t);
      m.timing.setup_ms = tf.u64("setup_ms");
      m.timing.boot_ms = tf.u64("boot_ms");
      m.timing.execute_ms = tf.u64("execute_ms");
      m.timing.total_ms = tf.u64("total_ms");
      if (auto r = tf.finish(); !r) return std::move(r).error();
    }
    m.cpu_time_ms = f.u64("cpu_time_ms");
    m.memory_peak_mb = f.u64("memory_peak_mb");
    m.warm_pool_hit = f.boolean("warm_pool_hit");
    m.accelerator = f.str("accelerator", limits::kMaxNameBytes);
    m.vm_start = f.str("vm_start", limits::kMaxNameBytes);
    m.state_lost = f.boolean("state_lost");
    return finish(f, std::move(m));
  }
  if (type == "error") {
    ErrorReply m;
    m.id = f.u64("id");
    auto code = f.str("code", limits::kMaxNameBytes);
    m.message = f.str("message", limits::kMaxMessageBytes);
    auto parsed = error_code_from_name(code);
    if (!parsed && !f.failed()) return bad("unknown error code '" + code + "'");
    m.code = parsed.value_or(ErrorCode::internal);
    return finish(f, std::move(m));
  }
  if (type == "hello") {
    Hello m;
    m.version = static_cast<uint32_t>(f.u64("version", UINT32_MAX));
    m.kernel = f.str("kernel", limits::kMaxNameBytes);
    m.prestarted = f.str("prestarted", limits::kMaxNameBytes);
    return finish(f, std::move(m));
  }
  if (type == "snapshots_request") {
    SnapshotsRequest m;
    m.id = f.u64("id");
    m.drop = f.boolean("drop");
    return finish(f, std::move(m));
  }
  if (type == "snapshot_list") {
    SnapshotList m;
    m.id = f.u64("id");
    for (const msgpack::object* e : f.array("snapshots", kMaxSnapshotEntries)) {
      Fields sf(*e);
      SnapshotInfo si;
      si.key = sf.str("key", limits::kMaxNameBytes);
      si.language = read_language(sf, &okay);
      si.memory_mb = static_cast<uint32_t>(sf.u64("memory_mb", UINT32_MAX));
      si.bytes = sf.u64("bytes");
      if (auto r = sf.finish(); !r) return std::move(r).error();
      m.snapshots.push_back(std::move(si));
    }
    if (!okay) return bad("unknown language");
    return finish(f, std::move(m));
  }
  if (type == "resume") {
    Resume m;
    m.seed = f.bytes("seed", kMaxSeedBytes);
    m.realtime_ns = f.u64("realtime_ns");
    m.hostname = f.str("hostname", 64);
    m.warm_up = f.boolean("warm_up");
    return finish(f, std::move(m));
  }
  if (type == "ping" || type == "pong") {
    uint64_t seq = f.u64("seq");
    if (type == "ping") return finish(f, Ping{seq});
    return finish(f, Pong{seq});
  }
  if (type == "status_request") {
    StatusRequest m;
    m.id = f.u64("id");
    return finish(f, std::move(m));
  }
  if (type == "status") {
    Status m;
    m.id = f.u64("id");
    m.version = f.str("version", limits::kMaxNameBytes);
    m.accelerator = f.str("accelerator", limits::kMaxNameBytes);
    m.accelerator_reason = f.str("accelerator_reason", limits::kMaxMessageBytes);
    m.vms = static_cast<uint32_t>(f.u64("vms", UINT32_MAX));
    m.max_vms = static_cast<uint32_t>(f.u64("max_vms", UINT32_MAX));
    m.runs_active = static_cast<uint32_t>(f.u64("runs_active", UINT32_MAX));
    m.runs_queued = static_cast<uint32_t>(f.u64("runs_queued", UINT32_MAX));
    m.sessions = static_cast<uint32_t>(f.u64("sessions", UINT32_MAX));
    m.host_limits = f.str("host_limits", limits::kMaxMessageBytes);
    for (const msgpack::object* e : f.array("pool", kMaxPoolEntries)) {
      Fields pf(*e);
      PoolStats ps;
      ps.language = read_language(pf, &okay);
      ps.target = static_cast<uint32_t>(pf.u64("target", UINT32_MAX));
      ps.ready = static_cast<uint32_t>(pf.u64("ready", UINT32_MAX));
      ps.booting = static_cast<uint32_t>(pf.u64("booting", UINT32_MAX));
      ps.hits = pf.u64("hits");
      ps.misses = pf.u64("misses");
      if (auto r = pf.finish(); !r) return std::move(r).error();
      m.pool.push_back(ps);
    }
    if (!okay) return bad("unknown language");
    return finish(f, std::move(m));
  }
  if (type == "exec") {
    Exec m;
    read_job(f, m, &okay);
    m.grace_ms = static_cast<uint32_t>(f.u64("grace_ms", UINT32_MAX));
    m.stdout_limit = f.u64("stdout_limit");
    m.stderr_limit = f.u64("stderr_limit");
    m.pids_max = static_cast<uint32_t>(f.u64("pids_max", UINT32_MAX));
    m.session = f.boolean("session");
    if (!okay) return bad("unknown language");
    return finish(f, std::move(m));
  }
  if (type == "exec_done") {
    ExecDone m;
    m.id = f.u64("id");
    m.exit_code = f.i32("exit_code");
    m.signal = f.i32("signal");
    m.timed_out = f.boolean("timed_out");
    m.duration_ms = f.u64("duration_ms");
    m.stdout_truncated = f.boolean("stdout_truncated");
    m.stderr_truncated = f.boolean("stderr_truncated");
    m.state_lost = f.boolean("state_lost");
    return finish(f, std::move(m));
  }
  if (type == "session_create") {
    SessionCreate m;
    m.id = f.u64("id");
    m.language = read_language(f, &okay);
    m.env = f.env("env");
    m.timeout_ms = static_cast<uint32_t>(f.u64("timeout_ms", UINT32_MAX));
    m.memory_mb = static_cast<uint32_t>(f.u64("memory_mb", UINT32_MAX));
    m.idle_timeout_ms = static_cast<uint32_t>(f.u64("idle_timeout_ms", UINT32_MAX));
    if (!okay) return bad("unknown language");
    return finish(f, std::move(m));
  }
  if (type == "session_list") {
    SessionList m;
    m.id = f.u64("id");
    for (const msgpack::object* e : f.array("sessions", kMaxSessionEntries)) {
      Fields sf(*e);
      SessionInfo si;
      si.session = sf.str("session", limits::kMaxSessionIdBytes);
      si.language = read_language(sf, &okay);
      si.memory_mb = static_cast<uint32_t>(sf.u64("memory_mb", UINT32_MAX));
      si.idle_timeout_ms = static_cast<uint32_t>(sf.u64("idle_timeout_ms", UINT32_MAX));
      si.exec_count = sf.u64("exec_count");
      si.created_unix_ms = sf.u64("created_unix_ms");
      si.last_activity_unix_ms = sf.u64("last_activity_unix_ms");
      si.vm_start = sf.str("vm_start", limits::kMaxNameBytes);
      if (auto r = sf.finish(); !r) return std::move(r).error();
      m.sessions.push_back(std::move(si));
    }
    if (!okay) return bad("unknown language");
    return finish(f, std::move(m));
  }
  if (type == "session_list_request") return finish(f, SessionListRequest{f.u64("id")});
  if (type == "session_exec") {
    SessionExec m;
    m.id = f.u64("id");
    m.session = f.str("session", limits::kMaxSessionIdBytes);
    m.code = f.bytes("code", limits::kMaxCodeBytes);
    m.timeout_ms = static_cast<uint32_t>(f.u64("timeout_ms", UINT32_MAX));
    return finish(f, std::move(m));
  }
  if (type == "session_close") {
    SessionClose m;
    m.id = f.u64("id");
    m.session = f.str("session", limits::kMaxSessionIdBytes);
    return finish(f, std::move(m));
  }
  if (type == "ack") return finish(f, Ack{f.u64("id")});
  if (type == "file_write") {
    FileWrite m;
    m.id = f.u64("id");
    m.session = f.str("session", limits::kMaxSessionIdBytes);
    m.path = f.bytes("path", limits::kMaxPathBytes);
    m.size = f.u64("size", limits::kMaxFileBytes);
    m.executable = f.boolean("executable");
    m.chunks = read_chunks(f);
    return finish(f, std::move(m));
  }
  if (type == "file_chunk") {
    FileChunk m;
    m.id = f.u64("id");
    m.data = f.bytes("data", limits::kMaxFileChunkWireBytes);
    return finish(f, std::move(m));
  }
  if (type == "file_read" || type == "file_list_request") {
    uint64_t id = f.u64("id");
    auto session = f.str("session", limits::kMaxSessionIdBytes);
    auto path = f.bytes("path", limits::kMaxPathBytes);
    if (type == "file_read") return finish(f, FileRead{id, std::move(session), std::move(path)});
    return finish(f, FileListRequest{id, std::move(session), std::move(path)});
  }
  if (type == "file_done") {
    FileDone m;
    m.id = f.u64("id");
    m.size = f.u64("size", limits::kMaxFileBytes);
    return finish(f, std::move(m));
  }
  if (type == "file_content") {
    FileContent m;
    m.id = f.u64("id");
    m.size = f.u64("size", limits::kMaxFileBytes);
    m.chunks = read_chunks(f);
    return finish(f, std::move(m));
  }
  if (type == "file_list") {
    FileList m;
    m.id = f.u64("id");
    for (const msgpack::object* e : f.array("entries", limits::kMaxListEntries)) {
      Fields ef(*e);
      FileEntry fe;
      fe.name = ef.bytes("name", limits::kMaxPathBytes);
      fe.is_dir = ef.boolean("is_dir");
      fe.size = ef.u64("size");
      if (auto r = ef.finish(); !r) return std::move(r).error();
      m.entries.push_back(std::move(fe));
    }
    m.truncated = f.boolean("truncated");
    return finish(f, std::move(m));
  }
  return bad("unknown message type '" + type + "'");
}

}  // namespace

std::string_view language_name(Language language) { return kLanguages[static_cast<size_t>(language)]; }

std::optional<Language> language_from_name(std::string_view name) {
  for (size_t i = 0; i < kLanguages.size(); ++i)
    if (kLanguages[i] == name) return static_cast<Language>(i);
  return std::nullopt;
}

std::string_view stream_name(Stream stream) { return stream == Stream::err ? "stderr" : "stdout"; }

uint64_t request_id_of(const Message& message) {
  return std::visit(
      [](const auto& m) -> uint64_t {
        if constexpr (requires { m.id; }) return m.id;
        return 0;
      },
      message);
}

std::string encode(const Message& message) {
  msgpack::sbuffer buf;
  Packer p(buf);
  std::visit(Encoder{p}, message);
  return std::string(buf.data(), buf.size());
}

Result<Message> decode(std::string_view payload) {
  msgpack::unpack_limit limit(limits::kMaxDecodeElements, limits::kMaxDecodeElements, payload.size(), payload.size(),
                              0, limits::kMaxDecodeDepth);
  try {
    size_t off = 0;
    msgpack::object_handle h = msgpack::unpack(payload.data(), payload.size(), off, nullptr, nullptr, limit);
    if (off != payload.size()) return bad("trailing bytes after the message");
    return decode_object(h.get());
  } catch (const std::exception& e) {
    return bad(e.what());
  }
}

}  // namespace sandbox::proto
