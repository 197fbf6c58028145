#include "daemon/control_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sandbox/limits.h>

#include "common/framing.h"
#include "common/unique_fd.h"

namespace sandbox::daemon {

// One client connection: its bytes in, its replies out, its peer in the
// service. Shared so that the service's sinks can hold it weakly.
class Connection : public Sink, public std::enable_shared_from_this<Connection> {
 public:
  Connection(ControlServer* server, Caller caller, UvHandle<uv_pipe_t> pipe, uv_loop_t* loop)
      : server_(server),
        caller_(caller),
        pipe_(std::move(pipe)),
        receive_(server->receive_budget_.open(caller.uid)),
        send_(server->send_budget_.open(caller.uid)) {
    pipe_.get()->data = this;
    timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); });
  }
  ~Connection() override {
    if (peer_) server_->service_.disconnect(*peer_);
  }

  const Caller& caller() const { return caller_; }

  void start() {
    peer_ = server_->service_.connect(caller_, weak_from_this());
    resume_reading();
    arm_timer();
  }

  // Sink: a reply to this client.
  void deliver(proto::Message&& m) override {
    if (closing_ || !pipe_) return;
    std::string bytes = frame_message(m);
    if (auto r = send_.grow(bytes.size()); !r || unsent_ + bytes.size() > server_->limits_.drop_bytes) {
      server_->refused_log_.log(LogLevel::warning, "uid " + std::to_string(caller_.uid) +
                                                       " does not read its replies; connection closed");
      return close();
    }
    // Replies start to wait: the client's reading is timed from here.
    if (unsent_ == 0) last_progress_ = Clock::now();
    unsent_ += bytes.size();
    std::weak_ptr<Connection> weak = weak_from_this();
    int rc = uv_write_string(stream(), std::move(bytes), [weak](size_t n, int) {
      if (auto self = weak.lock()) self->on_written(n);
    });
    if (rc != 0) return close();
    if (unsent_ > server_->limits_.pause_bytes) pause_reading();
  }

  // Refuses the connection: one error frame, then it is closed as soon as
  // that is written, whatever the peer does.
  void refuse(const Error& e) {
    deliver(proto::ErrorReply{0, e.code, e.message});
    finish();
  }

  // Refuses a connection just accepted: its error written at once (a
  // fresh socket's buffer takes it) and the descriptor closed in the same
  // turn. A flood of refused connections must not pile up descriptors
  // while their goodbyes wait for later loop turns.
  void reject(const Error& e) {
    std::string bytes = frame_message(proto::ErrorReply{0, e.code, e.message});
    uv_buf_t buf = uv_buf_init(bytes.data(), static_cast<unsigned>(bytes.size()));
    int n = uv_try_write(stream(), &buf, 1);
    if (n == UV_EAGAIN) return refuse(e);  // not taken: say it the slow way, bounded by finish()
    close();
  }

  // Sends what is queued, then closes (shutdown, refusals).
  void finish() {
    if (closing_ || !pipe_) return;
    closing_ = true;
    uv_read_stop(stream());
    if (peer_) server_->service_.disconnect(*peer_);
    std::weak_ptr<Connection> weak = weak_from_this();
    if (uv_shutdown_then(stream(), [weak] {
          if (auto self = weak.lock()) self->close();
        }) != 0)
      return close();
    // The shutdown waits for the queued replies to be written: a peer that
    // never reads them would hold the connection for ever.
    if (timer_)
      uv_timer_start(timer_.get(), [](uv_timer_t* t) {
        if (auto* c = owner_of<Connection>(t)) c->close();
      }, static_cast<uint64_t>(server_->limits_.idle_timeout.count()), 0);
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    closing_ = true;
    if (peer_) server_->service_.disconnect(*peer_);
    pipe_.reset();
    timer_.reset();
    server_->remove(this);  // the server drops it on a later loop turn
  }

 private:
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(pipe_.get()); }

  void resume_reading() {
    if (reading_ || closing_) return;
    reading_ = true;
    uv_read_start(stream(), uv_alloc_buffer, [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
      std::unique_ptr<char[]> owned(buf->base);
      auto* c = owner_of<Connection>(s);
      if (!c) return;
      if (n < 0) return c->close();
      if (n > 0) c->on_bytes({buf->base, static_cast<size_t>(n)});
    });
  }

  void pause_reading() {
    if (!reading_) return;
    reading_ = false;
    uv_read_stop(stream());
  }

  void on_written(size_t n) {
    last_progress_ = Clock::now();
    unsent_ -= std::min(unsent_, n);
    send_.shrink(n);
    if (unsent_ <= server_->limits_.pause_bytes / 2) resume_reading();
    arm_timer();
  }

  void on_bytes(std::string_view bytes) {
    if (closing_) return;
    last_activity_ = Clock::now();
    bool was_mid_frame = reader_.mid_frame();
    reader_.feed(bytes);
    fed_ += bytes.size();
    while (!closing_) {
      auto m = reader_.next();
      if (!m) break;
      // A frame we cannot parse means the rest of the stream cannot be
      // trusted either: say why once, then close.
      if (!*m) return refuse(m->error());
      if (!server_->service_.handle(*peer_, std::move(**m))) return finish();
    }
    if (closing_) return;
    // The reader's buffer keeps the capacity of the largest frame it held,
    // which no budget counts: a connection that sent one large frame and
    // then idles would hold megabytes. Between frames it starts afresh.
    if (!reader_.mid_frame() && fed_ > kReaderKeepBytes) {
      // Moved out, so that the old buffer goes with `old` (assigning a
      // fresh reader would keep the capacity).
      MessageReader old = std::move(reader_);
      reader_ = MessageReader(limits::kMaxFrameBytes);
      fed_ = 0;
    }
    // What a partial frame holds counts against the uid's and the
    // daemon's receive budgets.
    size_t held = reader_.buffered();
    if (held > receive_.bytes()) {
      if (auto r = receive_.grow(held - receive_.bytes()); !r) return refuse(r.error());
    } else {
      receive_.shrink(receive_.bytes() - held);
    }
    if (reader_.mid_frame() && !was_mid_frame) frame_started_ = Clock::now();
    arm_timer();
  }

  // Idle since: the last bytes in or the last reply out (a long request's
  // answer starts the idle time afresh).
  Clock::time_point last_seen() const { return std::max(last_activity_, last_progress_); }

  // One deadline at a time: a frame begun must complete; a connection with
  // nothing in flight and nothing queued must not linger.
  void arm_timer() {
    if (!timer_ || closing_) return;
    const auto& l = server_->limits_;
    std::chrono::milliseconds wait{0};
    if (reader_.mid_frame()) {
      wait = l.frame_timeout - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - frame_started_);
    } else if (unsent_ > 0) {
      // Replies waiting: the client must keep taking them.
      wait = l.idle_timeout - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_progress_);
    } else if (server_->service_.in_flight(*peer_) == 0) {
      // Idle: what is left of the idle timeout. libuv times from the loop's
      // cached clock, which lags after a long turn (an accept burst), so a
      // full wait again after an early check would make it twice as long.
      wait = l.idle_timeout - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_seen());
    } else {
      // Busy: checked again after a while.
      wait = l.idle_timeout;
    }
    uv_timer_start(timer_.get(), [](uv_timer_t* t) {
      if (auto* c = owner_of<Connection>(t)) c->on_timer();
    }, static_cast<uint64_t>(std::max<int64_t>(wait.count(), 1)), 0);
  }

  void on_timer() {
    const auto& l = server_->limits_;
    if (reader_.mid_frame() && Clock::now() - frame_started_ >= l.frame_timeout)
      return refuse(Error::make(ErrorCode::timeout, "a frame was not completed within " +
                                                        std::to_string(l.frame_timeout.count()) + " ms"));
    if (!reader_.mid_frame() && server_->service_.in_flight(*peer_) == 0 && unsent_ == 0 &&
        Clock::now() - last_seen() >= l.idle_timeout)
      return finish();
    // A client that asks and never reads is not idle by the rule above, and
    // reading is paused for it: without this it would keep its connection
    // and its queued replies for ever. Cut off, not finished: its replies
    // would never drain.
    if (unsent_ > 0 && Clock::now() - last_progress_ >= l.idle_timeout) {
      server_->refused_log_.log(LogLevel::warning, "uid " + std::to_string(caller_.uid) + " took none of its replies for " +
                                                       std::to_string(l.idle_timeout.count()) + " ms; connection closed");
      return close();
    }
    arm_timer();
  }

  friend class ControlServer;
  ControlServer* server_;
  Caller caller_;
  bool counted_ = false;  // counted against the connection limits
  UvHandle<uv_pipe_t> pipe_;
  UvHandle<uv_timer_t> timer_;
  std::shared_ptr<Service::Peer> peer_;
  MessageReader reader_{limits::kMaxFrameBytes};
  // Bytes fed to the reader since it was last made afresh; past this, it
  // is, once no frame is in progress (its buffer then holds at most twice
  // as much).
  static constexpr size_t kReaderKeepBytes = 64 << 10;
  size_t fed_ = 0;
  ByteBudget::Hold receive_, send_;
  size_t unsent_ = 0;
  bool reading_ = false;
  bool closing_ = false;
  bool closed_ = false;
  Clock::time_point last_activity_ = Clock::now(), frame_started_;
  // When a queued reply last went out (or the queue last started).
  Clock::time_point last_progress_ = Clock::now();
};

ControlServer::ControlServer(uv_loop_t* loop, Service& service, ControlLimits limits)
    : loop_(loop),
      service_(service),
      limits_(limits),
      receive_budget_(limits.receive_bytes_per_uid, limits.receive_bytes_total, "partial request frames"),
      send_budget_(limits.send_bytes_per_uid, limits.send_bytes_total, "replies not yet read"),
      later_(loop) {}

ControlServer::~ControlServer() {
  close();
  auto all = std::exchange(connections_, {});
  for (auto& c : all) c->close();
  later_.run();
}

namespace {

bool socket_is_live(const std::string& path) {
  unique_fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof addr.sun_path - 1);
  return probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace

Result<void> ControlServer::listen(const std::string& path, unsigned mode, std::optional<gid_t> gid) {
  if (path.size() >= sizeof(sockaddr_un::sun_path))
    return Error::make(ErrorCode::invalid_argument, "socket path too long: '" + path + "'");
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Error::make(ErrorCode::invalid_argument, "'" + path + "' exists and is not a socket");
    // A socket that still accepts belongs to a running daemon.
    if (socket_is_live(path)) return Error::make(ErrorCode::invalid_argument, "another daemon is listening on '" + path + "'");
  }
  // Bound, given its mode and group in a directory only we can enter, then
  // renamed into place (over a stale one): never reachable otherwise.
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string tmpl = dir + "/.sandboxd-bind-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return Error::sys("mkdtemp", tmpl);
  std::string staged = tmpl + "/s";
  auto cleanup = [&] {
    ::unlink(staged.c_str());
    ::rmdir(tmpl.c_str());
  };
  if (staged.size() >= sizeof(sockaddr_un::sun_path)) {
    cleanup();
    return Error::make(ErrorCode::invalid_argument, "socket directory path too long: '" + dir + "'");
  }
  server_ = UvHandle<uv_pipe_t>::make(this, [&](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
  if (!server_) return cleanup(), Error::make(ErrorCode::internal, "uv_pipe_init failed");
  if (int rc = uv_pipe_bind(server_.get(), staged.c_str()); rc != 0) {
    cleanup();
    return Error::make(ErrorCode::internal, "bind '" + staged + "': " + uv_strerror(rc));
  }
  if (::chmod(staged.c_str(), mode) != 0) return cleanup(), Error::sys("chmod", staged);
  if (gid && ::chown(staged.c_str(), static_cast<uid_t>(-1), *gid) != 0) return cleanup(), Error::sys("chown", staged);
  if (::rename(staged.c_str(), path.c_str()) != 0) return cleanup(), Error::sys("rename", path);
  ::rmdir(tmpl.c_str());
  path_ = path;
  int rc = uv_listen(reinterpret_cast<uv_stream_t*>(server_.get()), 128, [](uv_stream_t* s, int status) {
    if (auto* self = owner_of<ControlServer>(s)) self->on_connection(status);
  });
  if (rc != 0) return Error::make(ErrorCode::internal, "listen '" + path + "': " + uv_strerror(rc));
  return ok();
}

void ControlServer::on_connection(int status) {
  if (status < 0) {
    accept_log_.log(LogLevel::warning, std::string("control socket: accept failed: ") + uv_strerror(status));
    return;
  }
  auto pipe = UvHandle<uv_pipe_t>::make(nullptr, [&](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
  if (!pipe) return;
  if (int rc = uv_accept(reinterpret_cast<uv_stream_t*>(server_.get()), reinterpret_cast<uv_stream_t*>(pipe.get()));
      rc != 0) {
    accept_log_.log(LogLevel::warning, std::string("control socket: accept failed: ") + uv_strerror(rc));
    return;
  }
  uv_os_fd_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(pipe.get()), &fd);
  ucred cred{};
  socklen_t len = sizeof cred;
  bool known = ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
  Caller caller;
  if (known) caller = {cred.uid, cred.gid, cred.pid};
  auto conn = std::make_shared<Connection>(this, caller, std::move(pipe), loop_);
  connections_.insert(conn);
  auto refuse = [&](Error e, const std::string& why) {
    refused_log_.log(LogLevel::warning, "refused a connection from uid " + std::to_string(caller.uid) + " pid " +
                                            std::to_string(caller.pid) + ": " + why);
    conn->reject(e);
  };
  if (!known)
    return refuse(Error::make(ErrorCode::permission_denied, "cannot identify the peer (SO_PEERCRED)"), "no SO_PEERCRED");
  if (auto r = service_.authorize(caller, caller.gid); !r) return refuse(r.error(), "not allowed");
  // Only connections being served count against the limits: refused ones
  // still closing must not crowd out other users (one uid's flood would
  // otherwise fill the total with its own refusals).
  if (served_ >= limits_.max_connections)
    return refuse(Error::make(ErrorCode::capacity, "sandboxd has " + std::to_string(limits_.max_connections) +
                                                       " connections open (its limit); try again later"),
                  "too many connections");
  if (auto u = per_uid_.find(caller.uid); u != per_uid_.end() && u->second >= limits_.max_connections_per_uid)
    return refuse(Error::make(ErrorCode::capacity, "uid " + std::to_string(caller.uid) + " already has " +
                                                       std::to_string(limits_.max_connections_per_uid) +
                                                       " connections open (the per-user limit)"),
                  "too many connections from this uid");
  ++served_;
  ++per_uid_[caller.uid];
  conn->counted_ = true;
  conn->start();
}

void ControlServer::remove(Connection* c) {
  for (auto it = connections_.begin(); it != connections_.end(); ++it)
    if (it->get() == c) {
      if (c->counted_) {
        --served_;
        if (auto u = per_uid_.find(c->caller().uid); u != per_uid_.end() && --u->second == 0) per_uid_.erase(u);
      }
      // Destroyed on a later loop turn: this may be inside its own callback.
      std::shared_ptr<Connection> keep = *it;
      connections_.erase(it);
      later_.post([keep]() mutable { keep.reset(); });
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
  std::vector<std::shared_ptr<Connection>> all(connections_.begin(), connections_.end());
  for (auto& c : all) c->finish();
}

}  // namespace sandbox::daemon
