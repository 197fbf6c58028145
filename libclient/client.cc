// libsandbox: one blocking connection per call, so a Client is trivially
// thread-safe and a failed call leaves nothing behind.
#include "sandbox/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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
                   st->runs_queued, {}};
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
