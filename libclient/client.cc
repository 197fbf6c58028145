// libsandbox: one blocking connection per call, so a Client is trivially
// thread-safe and a failed call leaves nothing behind.
#include "sandbox/client.h"

#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <thread>

#include <sandbox/limits.h>

#include "common/files.h"
#include "common/framing.h"
#include "common/io.h"
#include "common/net_rules.h"
#include "common/protocol.h"
#include "common/unique_fd.h"
#include "common/validate.h"

namespace sandbox {
namespace {

using Clock = std::chrono::steady_clock;

// How long past the code's own timeout a call waits for the daemon: a boot
// under software emulation, an interpreter start and a retry fit well inside it.
constexpr std::chrono::milliseconds kReplySlack{180'000};
// A request with packages may wait for a layer build too, which the daemon
// bounds (package_build_timeout_ms, at most an hour).
constexpr std::chrono::milliseconds kBuildSlack{3'600'000};
// File calls: the largest transfer plus a boot's worth of slack.
constexpr std::chrono::milliseconds kFileCallTimeout{limits::kMaxTimeoutMs + kReplySlack.count()};
// How often a call with a cancel check looks at it.
constexpr int kCancelPollMs = 100;
// Retries of a `capacity` answer: first wait, and the most between tries.
constexpr std::chrono::milliseconds kFirstBackoff{50};
constexpr std::chrono::milliseconds kMaxBackoff{1'000};

Error comm(std::string msg) { return Error::make(ErrorCode::communication, std::move(msg)); }

// One request's connection to the daemon.
class Call {
 public:
  static Result<Call> open(const std::string& path) {
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
    return Call(std::move(fd));
  }

  Result<void> send(const proto::Message& m) {
    if (auto r = write_all(fd_.get(), frame_message(m), "sandboxd socket"); !r) {
      // The daemon may have answered and closed already (a refused peer):
      // its answer says more than the broken pipe.
      auto early = receive(Clock::now() + std::chrono::seconds(2));
      if (early)
        if (auto* err = std::get_if<proto::ErrorReply>(&*early)) return Error::make(err->code, std::move(err->message));
      return comm("sending to sandboxd: " + r.error().message);
    }
    return ok();
  }

  // The next message, waiting until `deadline`; an ErrorReply is returned
  // as a message (the caller decides what it means).
  Result<proto::Message> receive(Clock::time_point deadline) {
    std::vector<char> buf(64 << 10);
    for (;;) {
      if (auto m = reader_.next()) {
        if (!*m) return comm("sandboxd sent a " + m->error().message);
        return std::move(**m);
      }
      if (cancel_ && cancel_()) return comm("cancelled by the caller");
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return Error::make(ErrorCode::timeout, "no reply from sandboxd in time");
      pollfd p{fd_.get(), POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), cancel_ ? kCancelPollMs : 60'000)));
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0) return Error::sys("poll");
      if (rc == 0) continue;
      ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return comm(std::string("reading from sandboxd: ") + std::strerror(errno));
      if (n == 0) return comm("sandboxd closed the connection before replying");
      reader_.feed({buf.data(), static_cast<size_t>(n)});
    }
  }

  void set_cancel(const std::function<bool()>& cancel) { cancel_ = cancel; }

  // Receives until the answer: output goes to `on_output`, file chunks to
  // `on_chunk`; an error reply becomes an Error.
  Result<proto::Message> answer(Clock::time_point deadline, const OutputCallback& on_output = {},
                                const std::function<Result<void>(std::string&&)>& on_chunk = {}) {
    for (;;) {
      auto m = receive(deadline);
      if (!m) return std::move(m).error();
      if (auto* out = std::get_if<proto::Output>(&*m)) {
        if (on_output) on_output(out->stream, out->data);
        continue;
      }
      if (auto* chunk = std::get_if<proto::FileChunk>(&*m); chunk && on_chunk) {
        if (auto r = on_chunk(std::move(chunk->data)); !r) return std::move(r).error();
        continue;
      }
      if (auto* err = std::get_if<proto::ErrorReply>(&*m)) return Error::make(err->code, std::move(err->message));
      return m;
    }
  }

 private:
  explicit Call(unique_fd fd) : fd_(std::move(fd)) {}
  unique_fd fd_;
  MessageReader reader_{limits::kMaxFrameBytes};
  std::function<bool()> cancel_;
};

// One request on its own connection, answered by a message of type T.
template <class T>
Result<T> request(const std::string& socket, const proto::Message& m, Clock::time_point deadline,
                  const OutputCallback& on_output = {}, const std::function<bool()>& cancel = {}) {
  auto call = Call::open(socket);
  if (!call) return std::move(call).error();
  call->set_cancel(cancel);
  if (auto r = call->send(m); !r) return std::move(r).error();
  auto reply = call->answer(deadline, on_output);
  if (!reply) return std::move(reply).error();
  if (auto* v = std::get_if<T>(&*reply)) return std::move(*v);
  return comm("sandboxd sent an unexpected '" + std::string(proto::type_name(*reply)) + "' message");
}

std::chrono::milliseconds backoff_after(std::chrono::milliseconds previous) {
  // Jitter keeps many clients from retrying in step.
  uint16_t r = 0;
  (void)::getrandom(&r, sizeof r, 0);
  auto next = std::min(previous * 2, kMaxBackoff);
  return next / 2 + std::chrono::milliseconds(r % (next.count() / 2 + 1));
}

}  // namespace

Result<DaemonStatus> Client::status() const {
  auto st = request<proto::Status>(socket_path_, proto::StatusRequest{1}, Clock::now() + std::chrono::seconds(30));
  if (!st) return std::move(st).error();
  return std::move(st->status);
}

Result<std::vector<SnapshotInfo>> Client::snapshots(bool drop) const {
  auto list =
      request<proto::SnapshotList>(socket_path_, proto::SnapshotsRequest{1, drop}, Clock::now() + std::chrono::seconds(60));
  if (!list) return std::move(list).error();
  return std::move(list->snapshots);
}

Result<std::vector<LayerInfo>> Client::layers(const std::string& drop, bool drop_all) const {
  auto list = request<proto::LayerList>(socket_path_, proto::LayersRequest{1, drop, drop_all},
                                        Clock::now() + std::chrono::seconds(60));
  if (!list) return std::move(list).error();
  return std::move(list->layers);
}

Result<ImagesInfo> Client::images() const {
  auto list = request<proto::ImageList>(socket_path_, proto::ImagesRequest{1}, Clock::now() + std::chrono::seconds(30));
  if (!list) return std::move(list).error();
  return std::move(list->images);
}

Result<DaemonStatus> Client::drain(std::chrono::milliseconds deadline) const {
  auto ms = std::min<int64_t>(std::max<int64_t>(deadline.count(), 0), UINT32_MAX);
  auto st = request<proto::Status>(socket_path_, proto::Drain{1, static_cast<uint32_t>(ms)}, Clock::now() + std::chrono::seconds(30));
  if (!st) return std::move(st).error();
  return std::move(st->status);
}

Result<std::string> Client::metrics() const {
  auto m = request<proto::MetricsText>(socket_path_, proto::MetricsRequest{1}, Clock::now() + std::chrono::seconds(30));
  if (!m) return std::move(m).error();
  return std::move(m->text);
}

Result<Session> Client::create_session(const SessionOptions& options) const {
  if (auto v = validate(options); !v) return std::move(v).error();
  auto wait = kReplySlack + kReplySlack + (options.packages.empty() ? std::chrono::milliseconds(0) : kBuildSlack);
  auto list = request<proto::SessionList>(socket_path_, proto::SessionCreate{1, options}, Clock::now() + wait, {},
                                          cancel_);
  if (!list) return std::move(list).error();
  if (list->sessions.size() != 1) return comm("sandboxd sent an unexpected session list");
  Session s(socket_path_, std::move(list->sessions[0]));
  s.set_cancel_check(cancel_);
  return s;
}

Result<std::vector<SessionInfo>> Client::sessions() const {
  auto list = request<proto::SessionList>(socket_path_, proto::SessionListRequest{1}, Clock::now() + kReplySlack);
  if (!list) return std::move(list).error();
  return std::move(list->sessions);
}

Result<SessionInfo> Session::set_network(const std::vector<std::string>& domains, bool network) const {
  NetworkRequest n{network || !domains.empty(), domains, {}};
  if (auto v = validate_network(n); !v) return std::move(v).error();
  auto list = request<proto::SessionList>(socket_path_, proto::SessionNetwork{1, id_, n.network, domains},
                                          Clock::now() + kReplySlack + kReplySlack);
  if (!list) return std::move(list).error();
  if (list->sessions.size() != 1) return comm("sandboxd sent an unexpected session list");
  return std::move(list->sessions[0]);
}

Result<RunResult> Session::exec(std::string_view code, const OutputCallback& on_output,
                                std::chrono::milliseconds timeout) const {
  if (auto v = validate_exec(code, timeout); !v) return std::move(v).error();
  proto::SessionExec wire{1, id_, std::string(code), static_cast<uint32_t>(timeout.count())};
  // A session exec may wait behind earlier requests on the session.
  auto wait = std::max(timeout, std::chrono::milliseconds(limits::kMaxTimeoutMs)) + kReplySlack;
  auto r = request<proto::Finished>(socket_path_, wire, Clock::now() + wait, on_output, cancel_);
  if (!r) return std::move(r).error();
  return std::move(r->result);
}

Result<void> Session::write_file(std::string_view path, std::string_view data, bool executable) const {
  if (auto v = validate_guest_path(path, false); !v) return v;
  if (data.size() > limits::kMaxFileBytes)
    return Error::make(ErrorCode::invalid_argument, "file is " + std::to_string(data.size()) + " bytes; the limit is " +
                                                        std::to_string(limits::kMaxFileBytes));
  auto call = Call::open(socket_path_);
  if (!call) return std::move(call).error();
  if (auto r = call->send(proto::FileWrite{1, id_, std::string(path), data.size(), executable}); !r) return r;
  // One chunk at a time: neither side ever holds a frame with the whole file.
  for (size_t off = 0; off < data.size(); off += limits::kFileChunkBytes)
    if (auto r = call->send(proto::FileChunk{1, compress_chunk(data.substr(off, limits::kFileChunkBytes))}); !r) {
      // The daemon may have refused the write already: its answer says why.
      auto reply = call->answer(Clock::now() + std::chrono::seconds(5));
      return reply ? std::move(r).error() : std::move(reply).error();
    }
  auto reply = call->answer(Clock::now() + kFileCallTimeout);
  if (!reply) return std::move(reply).error();
  if (!std::holds_alternative<proto::FileDone>(*reply)) return comm("sandboxd sent an unexpected answer to a write");
  return ok();
}

Result<std::string> Session::read_file(std::string_view path) const {
  if (auto v = validate_guest_path(path, false); !v) return std::move(v).error();
  auto call = Call::open(socket_path_);
  if (!call) return std::move(call).error();
  if (auto r = call->send(proto::FileRead{1, id_, std::string(path)}); !r) return std::move(r).error();
  std::string data;
  auto reply = call->answer(Clock::now() + kFileCallTimeout, {}, [&](std::string&& chunk) -> Result<void> {
    auto n = chunk_content_size(chunk);
    if (!n || data.size() + *n > limits::kMaxFileBytes) return comm("sandboxd sent a damaged or oversized file");
    return decompress_chunk(chunk, &data);
  });
  if (!reply) return std::move(reply).error();
  auto* done = std::get_if<proto::FileDone>(&*reply);
  if (!done) return comm("sandboxd sent an unexpected answer to a read");
  if (done->size != data.size()) return comm("sandboxd sent a file whose size does not add up");
  return data;
}

Result<FileListing> Session::list_files(std::string_view dir) const {
  if (auto v = validate_guest_path(dir, true); !v) return std::move(v).error();
  auto r = request<proto::FileList>(socket_path_, proto::FileListRequest{1, id_, std::string(dir)},
                                    Clock::now() + kFileCallTimeout);
  if (!r) return std::move(r).error();
  return std::move(r->listing);
}

Result<void> Session::close() const {
  auto wait = std::chrono::milliseconds(limits::kMaxTimeoutMs) + kReplySlack;
  auto r = request<proto::Ack>(socket_path_, proto::SessionClose{1, id_}, Clock::now() + wait);
  if (!r) return std::move(r).error();
  return ok();
}

Result<RunResult> Client::run(const RunRequest& request, const OutputCallback& on_output) const {
  // Same checks as the daemon: a clear error without a round trip.
  if (auto v = validate(request); !v) return std::move(v).error();
  auto give_up = Clock::now() + capacity_wait_;
  auto backoff = kFirstBackoff;
  for (;;) {
    auto r = sandbox::request<proto::Finished>(socket_path_, proto::Run{1, request},
                                               Clock::now() + request.timeout + kReplySlack +
                                                   (request.packages.empty() ? std::chrono::milliseconds(0) : kBuildSlack),
                                               on_output, cancel_);
    if (r) return std::move(r->result);
    // Busy is not broken: the daemon refused before anything ran.
    if (r.error().code != ErrorCode::capacity || Clock::now() + backoff > give_up || (cancel_ && cancel_()))
      return std::move(r).error();
    std::this_thread::sleep_for(backoff);
    backoff = backoff_after(backoff);
  }
}

}  // namespace sandbox
