#include "daemon/control_socket.h"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "common/framing.h"
#include "common/limits.h"
#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

std::vector<gid_t> supplementary_groups(uid_t uid, gid_t gid) {
  std::vector<gid_t> groups;
  passwd pw{}, *found = nullptr;
  std::vector<char> buf(16 << 10);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return groups;
  int n = 64;
  groups.resize(static_cast<size_t>(n));
  if (::getgrouplist(pw.pw_name, gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<size_t>(n));
    if (::getgrouplist(pw.pw_name, gid, groups.data(), &n) < 0) n = 0;
  }
  groups.resize(static_cast<size_t>(std::max(n, 0)));
  return groups;
}

}  // namespace

bool peer_allowed(const AccessPolicy& policy, const Caller& peer, const std::vector<gid_t>& peer_groups) {
  if (peer.uid == 0 || peer.uid == policy.daemon_uid) return true;
  if (std::find(policy.allowed_uids.begin(), policy.allowed_uids.end(), peer.uid) != policy.allowed_uids.end())
    return true;
  for (gid_t g : policy.allowed_gids) {
    if (g == peer.gid) return true;
    if (std::find(peer_groups.begin(), peer_groups.end(), g) != peer_groups.end()) return true;
  }
  return false;
}

// One client connection. Several runs may be in flight on it; each is
// keyed by the client's request id. Shared so that runs can hold it weakly.
class Connection : public RunObserver, public std::enable_shared_from_this<Connection> {
 public:
  Connection(ControlServer* server, Caller caller) : server_(server), caller_(caller) {}
  ~Connection() override { drop_runs(); }

  UvHandle<uv_pipe_t>& pipe() { return pipe_; }
  const Caller& caller() const { return caller_; }

  void start() {
    uv_read_start(stream(), uv_alloc_buffer, [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
      std::unique_ptr<char[]> owned(buf->base);
      auto* c = owner_of<Connection>(s);
      if (!c) return;
      if (n < 0) return c->close("peer closed");
      if (n > 0) c->on_bytes({buf->base, static_cast<size_t>(n)});
    });
  }

  void send(const proto::Message& m) {
    if (closing_ || !pipe_) return;
    if (uv_write_string(stream(), frame_message(m)) != 0) close("write failed");
  }

  // Refuses the connection with one error frame, then closes once it is written.
  void refuse(ErrorCode code, std::string message) {
    drop_runs();
    send(proto::ErrorReply{0, code, std::move(message)});
    closing_ = true;
    uv_read_stop(stream());
    auto* req = new uv_shutdown_t;
    req->data = nullptr;
    if (uv_shutdown(req, stream(), [](uv_shutdown_t* r, int) { delete r; }) != 0) delete req;
    // The server drops it when the peer closes its end, or at shutdown.
    uv_read_start(stream(), uv_alloc_buffer, [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
      delete[] buf->base;
      if (auto* c = owner_of<Connection>(s); c && n < 0) c->close("refused");
    });
  }

  // Sends what is queued, then closes: used at shutdown, after the runs.
  void finish() {
    if (closed_ || !pipe_) return;
    closed_ = true;
    closing_ = true;
    uv_read_stop(stream());
    auto* req = new uv_shutdown_t;
    req->data = new std::shared_ptr<Connection>(shared_from_this());
    int rc = uv_shutdown(req, stream(), [](uv_shutdown_t* r, int) {
      auto* keep = static_cast<std::shared_ptr<Connection>*>(r->data);
      (*keep)->pipe_.reset();
      delete keep;
      delete r;
    });
    if (rc != 0) {
      delete static_cast<std::shared_ptr<Connection>*>(req->data);
      delete req;
      pipe_.reset();
    }
  }

  void close(std::string_view why) {
    if (closed_) return;
    closed_ = true;
    log_debug("connection from uid " + std::to_string(caller_.uid) + " closed: " + std::string(why));
    drop_runs();
    server_->remove(this);  // may destroy *this: nothing after this line
  }

  // RunObserver
  void on_output(uint64_t request_id, proto::Stream stream, std::string_view data) override {
    send(proto::Output{request_id, stream, std::string(data)});
  }
  void on_result(proto::RunResult result) override {
    runs_.erase(result.id);
    send(result);
  }
  void on_error(proto::ErrorReply error) override {
    runs_.erase(error.id);
    send(error);
  }
  void on_reply(proto::Message reply) override {
    runs_.erase(proto::request_id_of(reply));
    send(reply);
  }

 private:
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(pipe_.get()); }

  void on_bytes(std::string_view bytes) {
    if (closing_) return;
    // A frame we cannot parse means the rest of the stream cannot be
    // trusted either: say why once, then close.
    if (auto r = decoder_.feed(bytes); !r) return refuse(ErrorCode::invalid_argument, r.error().message);
    std::string payload;
    while (!closing_ && decoder_.next(&payload)) {
      auto m = proto::decode(payload);
      if (!m) return refuse(ErrorCode::invalid_argument, m.error().message);
      if (auto* st = std::get_if<proto::StatusRequest>(&*m)) {
        auto status = server_->manager_.status();
        status.id = st->id;
        send(status);
        continue;
      }
      if (auto* sr = std::get_if<proto::SnapshotsRequest>(&*m)) {
        // Emptying the cache slows everyone down: an operator's call.
        if (sr->drop && caller_.uid != 0 && caller_.uid != server_->policy_.daemon_uid) {
          send(proto::ErrorReply{sr->id, ErrorCode::permission_denied, "only root may drop snapshots"});
          continue;
        }
        send(proto::SnapshotList{sr->id, server_->manager_.snapshots(sr->drop)});
        continue;
      }
      if (auto* ls = std::get_if<proto::SessionListRequest>(&*m)) {
        send(proto::SessionList{ls->id, server_->manager_.sessions(caller_)});
        continue;
      }
      if (auto* create = std::get_if<proto::SessionCreate>(&*m)) {
        on_create(std::move(*create));
        continue;
      }
      bool session_request = std::holds_alternative<proto::SessionExec>(*m) ||
                             std::holds_alternative<proto::SessionClose>(*m) ||
                             std::holds_alternative<proto::FileWrite>(*m) ||
                             std::holds_alternative<proto::FileRead>(*m) ||
                             std::holds_alternative<proto::FileListRequest>(*m);
      if (session_request) {
        uint64_t request_id = proto::request_id_of(*m);
        // Session requests outlive this connection: the session is not the
        // connection's, so nothing is cancelled when it closes.
        if (auto r = server_->manager_.session_request(caller_, request_id, std::move(*m), weak_from_this()); !r)
          send(proto::ErrorReply{request_id, r.error().code, r.error().message});
        continue;
      }
      auto* run = std::get_if<proto::RunRequest>(&*m);
      if (!run)
        return refuse(ErrorCode::invalid_argument,
                      "a client may only send run, session, file, status and snapshot requests");
      on_run(std::move(*run));
    }
  }

  void on_create(proto::SessionCreate req) {
    uint64_t request_id = req.id;
    if (runs_.count(request_id) || runs_.size() >= kMaxRunsPerConnection) {
      send(proto::ErrorReply{request_id, ErrorCode::invalid_argument, "request id in use, or too many requests"});
      return;
    }
    auto id = server_->manager_.create_session(caller_, std::move(req), weak_from_this());
    if (!id) {
      send(proto::ErrorReply{request_id, id.error().code, id.error().message});
      return;
    }
    // Until it is open, a session dies with the connection that asked for it.
    runs_[request_id] = *id;
  }

  void on_run(proto::RunRequest req) {
    uint64_t request_id = req.id;
    if (runs_.count(request_id)) {
      send(proto::ErrorReply{request_id, ErrorCode::invalid_argument, "request id already in use on this connection"});
      return;
    }
    if (runs_.size() >= kMaxRunsPerConnection) {
      send(proto::ErrorReply{request_id, ErrorCode::capacity, "too many runs in flight on one connection"});
      return;
    }
    auto id = server_->manager_.run(caller_, std::move(req), weak_from_this());
    if (!id) {
      send(proto::ErrorReply{request_id, id.error().code, id.error().message});
      return;
    }
    runs_[request_id] = *id;
  }

  void drop_runs() {
    auto runs = std::exchange(runs_, {});
    for (auto& [request_id, run_id] : runs) server_->manager_.cancel(run_id);
  }

  // Bounds what one connection can ask of the daemon at once.
  static constexpr size_t kMaxRunsPerConnection = 64;

  ControlServer* server_;
  Caller caller_;
  UvHandle<uv_pipe_t> pipe_;
  FrameDecoder decoder_{limits::kMaxClientFrameBytes};
  std::map<uint64_t, Manager::RunId> runs_;
  bool closing_ = false;
  bool closed_ = false;
};

ControlServer::ControlServer(uv_loop_t* loop, Manager& manager, AccessPolicy policy)
    : loop_(loop), manager_(manager), policy_(std::move(policy)) {}

ControlServer::~ControlServer() { close(); }

Result<void> ControlServer::listen(const std::string& path, unsigned mode) {
  if (path.size() >= sizeof(sockaddr_un::sun_path))
    return Error::make(ErrorCode::invalid_argument, "socket path too long: '" + path + "'");
  server_ = UvHandle<uv_pipe_t>::make(this, [&](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
  if (!server_) return Error::make(ErrorCode::internal, "uv_pipe_init failed");
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Error::make(ErrorCode::invalid_argument, "'" + path + "' exists and is not a socket");
    // A socket that still accepts belongs to a running daemon.
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(probe);
    if (live) return Error::make(ErrorCode::invalid_argument, "another daemon is listening on '" + path + "'");
    ::unlink(path.c_str());
  }
  // Bind under a restrictive umask so there is no window with a wider mode.
  mode_t old = ::umask(0177);
  int rc = uv_pipe_bind(server_.get(), path.c_str());
  ::umask(old);
  if (rc != 0) return Error::make(ErrorCode::internal, "bind '" + path + "': " + uv_strerror(rc));
  path_ = path;
  if (::chmod(path.c_str(), mode) != 0) return Error::sys("chmod", path);
  rc = uv_listen(reinterpret_cast<uv_stream_t*>(server_.get()), 128, [](uv_stream_t* s, int status) {
    if (auto* self = owner_of<ControlServer>(s); self && status == 0) self->on_connection();
  });
  if (rc != 0) return Error::make(ErrorCode::internal, "listen '" + path + "': " + uv_strerror(rc));
  return ok();
}

void ControlServer::on_connection() {
  auto pipe = UvHandle<uv_pipe_t>::make(nullptr, [&](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
  if (!pipe) return;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(server_.get()), reinterpret_cast<uv_stream_t*>(pipe.get())) != 0) return;
  uv_os_fd_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(pipe.get()), &fd);
  ucred cred{};
  socklen_t len = sizeof cred;
  Caller caller;
  bool known = ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
  if (known) caller = {cred.uid, cred.gid, cred.pid};
  auto conn = std::make_shared<Connection>(this, caller);
  pipe.get()->data = conn.get();
  conn->pipe() = std::move(pipe);
  connections_.insert(conn);
  if (!known) return conn->refuse(ErrorCode::permission_denied, "cannot identify the peer (SO_PEERCRED)");
  if (!peer_allowed(policy_, caller, supplementary_groups(caller.uid, caller.gid))) {
    log_warning("refused connection from uid " + std::to_string(caller.uid) + " pid " + std::to_string(caller.pid));
    return conn->refuse(ErrorCode::permission_denied,
                        "uid " + std::to_string(caller.uid) + " is not allowed to use sandboxd");
  }
  conn->start();
}

void ControlServer::remove(Connection* c) {
  for (auto it = connections_.begin(); it != connections_.end(); ++it)
    if (it->get() == c) {
      // Keep it alive until the current callback has returned.
      auto keep = *it;
      connections_.erase(it);
      uv_loop_t* loop = loop_;
      auto* t = new uv_timer_t;
      uv_timer_init(loop, t);
      t->data = new std::shared_ptr<Connection>(std::move(keep));
      uv_timer_start(
          t,
          [](uv_timer_t* t) {
            delete static_cast<std::shared_ptr<Connection>*>(t->data);
            uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
          },
          0, 0);
      return;
    }
}

void ControlServer::stop_listening() {
  server_.reset();
  if (!path_.empty()) {
    ::unlink(path_.c_str());
    path_.clear();
  }
}

void ControlServer::close() {
  stop_listening();
  auto all = std::exchange(connections_, {});
  for (auto& c : all) c->finish();
}

}  // namespace sandbox::daemon
