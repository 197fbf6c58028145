// libsandbox: one blocking connection per call, so a Client is trivially
// thread-safe and a failed call leaves nothing behind.
#include "sandbox/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/files.h"
#include "common/framing.h"
#include "common/limits.h"
#include "common/protocol.h"
#include "common/unique_fd.h"
#include "common/validate.h"

namespace sandbox {
namespace {

// How long past the code's own timeout a call waits for the daemon: a boot
// under software emulation and a retry fit well inside it.
constexpr std::chrono::milliseconds kReplySlack{180'000};

Error comm(std::string msg) { return Error::make(ErrorCode::communication, std::move(msg)); }

Result<unique_fd> connect_to(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return Error::make(ErrorCode::invalid_argument, "socket path too long");
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof addr.sun_path - 1);
  unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::sys("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    auto e = Error::sys("connect", path, err);
    if (err == ENOENT || err == ECONNREFUSED) {
      e.code = ErrorCode::communication;
      e.message += " (is sandboxd running?)";
    }
    return e;
  }
  return fd;
}

Result<void> write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return comm(std::string("sending to sandboxd: ") + std::strerror(errno));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return ok();
}

RunResult from_wire(proto::RunResult&& r) {
  RunResult out;
  out.stdout_data = std::move(r.stdout_data);
  out.stderr_data = std::move(r.stderr_data);
  out.stdout_truncated = r.stdout_truncated;
  out.stderr_truncated = r.stderr_truncated;
  out.exit_code = r.exit_code;
  out.signal = r.signal;
  out.timed_out = r.timed_out;
  out.execution_time_ms = r.execution_time_ms;
  out.cpu_time_ms = r.cpu_time_ms;
  out.memory_peak_mb = r.memory_peak_mb;
  out.timing = {r.timing.setup_ms, r.timing.boot_ms, r.timing.execute_ms, r.timing.total_ms};
  out.warm_pool_hit = r.warm_pool_hit;
  out.accelerator = std::move(r.accelerator);
  out.vm_start = std::move(r.vm_start);
  out.state_lost = r.state_lost;
  return out;
}

// Reads one whole message, waiting until `deadline`.
Result<proto::Message> read_message(int fd, std::chrono::steady_clock::time_point deadline, FrameDecoder* decoder) {
  std::vector<char> buf(64 << 10);
  std::string payload;
  for (;;) {
    if (decoder->next(&payload)) {
      auto m = proto::decode(payload);
      if (!m) return comm("sandboxd sent a " + m.error().message);
      return m;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Error::make(ErrorCode::timeout, "no reply from sandboxd in time");
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 60'000)));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return Error::sys("poll");
    if (rc == 0) continue;
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return comm(std::string("reading from sandboxd: ") + std::strerror(errno));
    if (n == 0) return comm("sandboxd closed the connection before replying");
    if (auto r = decoder->feed({buf.data(), static_cast<size_t>(n)}); !r) return comm("sandboxd sent a " + r.error().message);
  }
}

Result<proto::Message> read_message(int fd, std::chrono::steady_clock::time_point deadline) {
  FrameDecoder decoder(limits::kMaxClientFrameBytes);
  return read_message(fd, deadline, &decoder);
}

using Clock = std::chrono::steady_clock;

// One request on its own connection: output chunks go to `on_output`; the
// first other message is the answer (an error reply becomes an Error).
Result<proto::Message> call(const std::string& socket, const proto::Message& request, Clock::time_point deadline,
                            const OutputCallback& on_output = {}) {
  auto fd = connect_to(socket);
  if (!fd) return std::move(fd).error();
  if (auto r = write_all(fd->get(), frame_message(request)); !r) return std::move(r).error();
  FrameDecoder decoder(limits::kMaxClientFrameBytes);
  for (;;) {
    auto m = read_message(fd->get(), deadline, &decoder);
    if (!m) return std::move(m).error();
    if (auto* out = std::get_if<proto::Output>(&*m)) {
      if (on_output) on_output(out->stream == proto::Stream::err ? Stream::err : Stream::out, out->data);
      continue;
    }
    if (auto* err = std::get_if<proto::ErrorReply>(&*m)) return Error::make(err->code, std::move(err->message));
    return m;
  }
}

template <class T>
Result<T> expect(Result<proto::Message> m) {
  if (!m) return std::move(m).error();
  if (auto* v = std::get_if<T>(&*m)) return std::move(*v);
  return comm("sandboxd sent an unexpected message");
}

uint32_t to_ms(std::chrono::milliseconds d) {
  auto ms = d.count();
  return ms < 0 ? 0 : ms > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(ms);
}

SessionInfo from_wire(proto::SessionInfo&& s) {
  return {std::move(s.session), static_cast<Language>(s.language), s.memory_mb,
          std::chrono::milliseconds(s.idle_timeout_ms), s.exec_count, s.created_unix_ms, s.last_activity_unix_ms,
          std::move(s.vm_start)};
}

// File calls: the largest transfer plus a boot's worth of slack.
constexpr std::chrono::milliseconds kFileCallTimeout{limits::kMaxTimeoutMs + kReplySlack.count()};

}  // namespace

std::string_view language_name(Language language) {
  return proto::language_name(static_cast<proto::Language>(language));
}

std::optional<Language> parse_language(std::string_view name) {
  if (name == "js" || name == "node") return Language::javascript;
  if (name == "sh" || name == "bash" || name == "shell") return Language::raw;
  if (name == "py" || name == "python3") return Language::python;
  auto l = proto::language_from_name(name);
  if (!l) return std::nullopt;
  return static_cast<Language>(*l);
}

Result<DaemonStatus> Client::status() const {
  auto fd = connect_to(socket_path_);
  if (!fd) return std::move(fd).error();
  if (auto r = write_all(fd->get(), frame_message(proto::StatusRequest{1})); !r) return std::move(r).error();
  auto m = read_message(fd->get(), std::chrono::steady_clock::now() + std::chrono::seconds(30));
  if (!m) return std::move(m).error();
  if (auto* err = std::get_if<proto::ErrorReply>(&*m)) return Error::make(err->code, std::move(err->message));
  auto* st = std::get_if<proto::Status>(&*m);
  if (!st) return comm("sandboxd sent an unexpected message");
  DaemonStatus out{st->version, st->accelerator, st->accelerator_reason, st->vms, st->max_vms, st->runs_active,
                   st->runs_queued, st->sessions, {}, st->host_limits};
  for (const auto& p : st->pool)
    out.pool.push_back({static_cast<Language>(p.language), p.target, p.ready, p.booting, p.hits, p.misses});
  return out;
}

Result<std::vector<SnapshotInfo>> Client::snapshots(bool drop) const {
  auto fd = connect_to(socket_path_);
  if (!fd) return std::move(fd).error();
  if (auto r = write_all(fd->get(), frame_message(proto::SnapshotsRequest{1, drop})); !r) return std::move(r).error();
  auto m = read_message(fd->get(), std::chrono::steady_clock::now() + std::chrono::seconds(60));
  if (!m) return std::move(m).error();
  if (auto* err = std::get_if<proto::ErrorReply>(&*m)) return Error::make(err->code, std::move(err->message));
  auto* list = std::get_if<proto::SnapshotList>(&*m);
  if (!list) return comm("sandboxd sent an unexpected message");
  std::vector<SnapshotInfo> out;
  for (auto& e : list->snapshots) out.push_back({e.key, static_cast<Language>(e.language), e.memory_mb, e.bytes});
  return out;
}

Result<Session> Client::create_session(const SessionOptions& options) const {
  proto::SessionCreate wire{1, static_cast<proto::Language>(options.language), options.env, to_ms(options.timeout),
                            options.memory_mb, to_ms(options.idle_timeout)};
  proto::RunRequest as_run{1, wire.language, "#", wire.env, wire.timeout_ms, wire.memory_mb};
  if (auto v = validate_run_request(as_run); !v) return std::move(v).error();
  auto list = expect<proto::SessionList>(call(socket_path_, wire, Clock::now() + kReplySlack + kReplySlack));
  if (!list) return std::move(list).error();
  if (list->sessions.size() != 1) return comm("sandboxd sent an unexpected message");
  return Session(socket_path_, std::move(list->sessions[0].session));
}

Result<std::vector<SessionInfo>> Client::sessions() const {
  auto list = expect<proto::SessionList>(call(socket_path_, proto::SessionListRequest{1}, Clock::now() + kReplySlack));
  if (!list) return std::move(list).error();
  std::vector<SessionInfo> out;
  for (auto& s : list->sessions) out.push_back(from_wire(std::move(s)));
  return out;
}

Result<RunResult> Session::exec(std::string_view code, const OutputCallback& on_output,
                                std::chrono::milliseconds timeout) const {
  if (code.empty()) return Error::make(ErrorCode::invalid_argument, "code is empty");
  if (code.size() > limits::kMaxCodeBytes) return Error::make(ErrorCode::invalid_argument, "code is too large");
  proto::SessionExec wire{1, id_, std::string(code), to_ms(timeout)};
  // A session exec waits behind earlier requests on the session.
  auto wait = std::max(timeout, std::chrono::milliseconds(limits::kMaxTimeoutMs)) + kReplySlack;
  auto r = expect<proto::RunResult>(call(socket_path_, wire, Clock::now() + wait, on_output));
  if (!r) return std::move(r).error();
  return from_wire(std::move(*r));
}

Result<void> Session::write_file(std::string_view path, std::string_view data, bool executable) const {
  if (auto v = validate_guest_path(path, false); !v) return v;
  if (data.size() > limits::kMaxFileBytes)
    return Error::make(ErrorCode::invalid_argument, "file is " + std::to_string(data.size()) + " bytes; the limit is " +
                                                        std::to_string(limits::kMaxFileBytes));
  proto::FileWrite wire{1, id_, std::string(path), data.size(), executable, compress_chunks(data)};
  auto r = expect<proto::FileDone>(call(socket_path_, wire, Clock::now() + kFileCallTimeout));
  if (!r) return std::move(r).error();
  return ok();
}

Result<std::string> Session::read_file(std::string_view path) const {
  if (auto v = validate_guest_path(path, false); !v) return std::move(v).error();
  auto r = expect<proto::FileContent>(
      call(socket_path_, proto::FileRead{1, id_, std::string(path)}, Clock::now() + kFileCallTimeout));
  if (!r) return std::move(r).error();
  auto data = decompress_chunks(r->chunks, r->size);
  if (!data) return comm("sandboxd sent a damaged file: " + data.error().message);
  return data;
}

Result<std::vector<FileEntry>> Session::list_files(std::string_view dir) const {
  if (auto v = validate_guest_path(dir, true); !v) return std::move(v).error();
  auto r = expect<proto::FileList>(
      call(socket_path_, proto::FileListRequest{1, id_, std::string(dir)}, Clock::now() + kFileCallTimeout));
  if (!r) return std::move(r).error();
  std::vector<FileEntry> out;
  for (auto& e : r->entries) out.push_back({std::move(e.name), e.is_dir, e.size});
  return out;
}

Result<void> Session::close() const {
  auto wait = std::chrono::milliseconds(limits::kMaxTimeoutMs) + kReplySlack;
  auto r = expect<proto::Ack>(call(socket_path_, proto::SessionClose{1, id_}, Clock::now() + wait));
  if (!r) return std::move(r).error();
  return ok();
}

Result<RunResult> Client::run(const RunRequest& request, const OutputCallback& on_output) const {
  proto::RunRequest wire;
  wire.id = 1;
  wire.language = static_cast<proto::Language>(request.language);
  wire.code = request.code;
  wire.env = request.env;
  auto ms = request.timeout.count();
  wire.timeout_ms = ms < 0 ? 0 : ms > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(ms);
  wire.memory_mb = request.memory_mb;
  // Same checks as the daemon: a clear error without a round trip.
  if (auto v = validate_run_request(wire); !v) return std::move(v).error();

  auto fd = connect_to(socket_path_);
  if (!fd) return std::move(fd).error();
  if (auto r = write_all(fd->get(), frame_message(wire)); !r) return std::move(r).error();

  auto deadline = std::chrono::steady_clock::now() + request.timeout + kReplySlack;
  FrameDecoder decoder(limits::kMaxClientFrameBytes);
  for (;;) {
    auto m = read_message(fd->get(), deadline, &decoder);
    if (!m) {
      if (m.error().message.ends_with("before replying"))
        return comm("sandboxd closed the connection before the result");
      return std::move(m).error();
    }
    if (auto* out = std::get_if<proto::Output>(&*m)) {
      if (on_output) on_output(out->stream == proto::Stream::err ? Stream::err : Stream::out, out->data);
    } else if (auto* res = std::get_if<proto::RunResult>(&*m)) {
      return from_wire(std::move(*res));
    } else if (auto* err = std::get_if<proto::ErrorReply>(&*m)) {
      return Error::make(err->code, std::move(err->message));
    } else {
      return comm("sandboxd sent an unexpected message");
    }
  }
}

}  // namespace sandbox
