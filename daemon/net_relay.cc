#include "daemon/net_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/fsuid.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <random>

#include <sandbox/limits.h>

#include "daemon/dns_message.h"
#include "daemon/http_head.h"
#include "daemon/log.h"
#include "daemon/socks.h"
#include "daemon/tls_hello.h"

namespace sandbox::daemon {

using net::FrameType;
using net::ResetReason;

// DNS lookups one VM may have in flight; more are dropped (clients retry).
constexpr size_t kMaxDnsPending = 64;
// Bytes queued towards a guest that does not read its channel: data is
// bounded by each stream's credit (64 x 256 KiB), but answers to DNS
// queries, resets and credit are not; past this the guest loses its
// channel rather than the daemon its memory.
constexpr size_t kMaxChannelBacklog = 32 << 20;
// Addresses one VM's pin set holds: a guest looking up endless names under
// an allowed wildcard must not grow the daemon without bound. Past it,
// lookups of new addresses fail (SERVFAIL); pinned ones keep working.
constexpr size_t kMaxPinnedAddresses = 4096;
// Names one pinned address is bound to (a CDN address serves many).
constexpr size_t kMaxNamesPerAddress = 256;
// Denials logged per VM and window; the rest are counted (see log_decision).
constexpr uint32_t kMaxDenyLogs = 100;
constexpr std::chrono::seconds kDenyLogWindow{10};
// TTL of the answers the guest gets: short, so a long-lived guest asks
// again and the pin set follows the names.
constexpr uint32_t kAnswerTtl = 60;

struct NetRelay::Conn {
  NetRelay* relay = nullptr;
  uint32_t id = 0;
  bool egress = true;  // guest -> outside; else host client -> exposed guest port
  enum class State { judging, dialing, open } state = State::judging;
  std::string address;  // raw bytes (egress)
  uint16_t port = 0;
  std::string name, sni;
  UvHandle<uv_tcp_t> tcp;
  UvHandle<uv_pipe_t> pipe;  // the client of an exposed Unix socket
  UvHandle<uv_timer_t> timer;
  std::string early;              // guest bytes before the peer is connected
  uint32_t guest_credit = net::kNetWindow;  // bytes the guest will still take
  uint64_t unacked = 0;           // guest bytes not yet credited back
  bool reading = false, peer_eof = false, guest_closed = false;
  bool sniff = false;  // open, its first bytes held until judged (see sniff())
  std::string refusal;  // a proxy's answer to its client should its target fail
  // A request to one of the guest's proxies, not yet turned into a connection.
  enum class Via { direct, http_proxy, socks_greeting, socks_request } via = Via::direct;
  uint64_t bytes_in = 0, bytes_out = 0;
  // The peer's stream: the outside server or the host client, TCP or Unix.
  uv_stream_t* stream() const {
    return tcp ? reinterpret_cast<uv_stream_t*>(tcp.get()) : reinterpret_cast<uv_stream_t*>(pipe.get());
  }
  bool has_peer() const { return tcp || pipe; }
};

namespace {

std::shared_ptr<NetRelay::Conn> lock(const std::weak_ptr<NetRelay::Conn>& w) { return w.lock(); }

std::string reason_byte(ResetReason r) { return std::string(1, static_cast<char>(r)); }

}  // namespace

NetRelay::NetRelay(uv_loop_t* loop, const NetConfig* config, std::string vm_name)
    : loop_(loop), config_(config), vm_name_(std::move(vm_name)), alive_(std::make_shared<NetRelay*>(this)) {}

NetRelay::~NetRelay() {
  *alive_ = nullptr;
  for (auto& [id, c] : conns_) c->relay = nullptr;
}

Result<void> NetRelay::open(unique_fd channel) {
  channel_ = UvHandle<uv_pipe_t>::make(this, [&](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
  if (!channel_) return Error::make(ErrorCode::internal, "cannot create the network channel handle");
  if (int rc = uv_pipe_open(channel_.get(), channel.get()); rc != 0) return uv_error("uv_pipe_open", rc);
  channel.release();
  uv_read_start(reinterpret_cast<uv_stream_t*>(channel_.get()), uv_alloc_buffer,
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                  std::unique_ptr<char[]> owned(buf->base);
                  auto* self = owner_of<NetRelay>(s);
                  if (!self) return;
                  if (n > 0) return self->on_bytes({buf->base, static_cast<size_t>(n)});
                  if (n < 0) uv_read_stop(s);
                });
  return ok();
}

void NetRelay::send(FrameType t, uint32_t stream, std::string_view payload) {
  if (failed_ || !channel_) return;
  if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(channel_.get())) > kMaxChannelBacklog)
    return fail("the guest does not read its network channel");
  uv_write_string(reinterpret_cast<uv_stream_t*>(channel_.get()), net::encode_frame(t, stream, payload));
}

void NetRelay::fail(const std::string& why) {
  if (failed_) return;
  failed_ = true;
  log_warning("net vm=" + vm_name_ + " channel closed: " + why);
  if (channel_) uv_read_stop(reinterpret_cast<uv_stream_t*>(channel_.get()));
  // Connections stay (a callback up the stack may be using one) but stop
  // moving: nothing more reaches the guest. They go with the VM.
  for (auto& [id, c] : conns_)
    if (c->has_peer() && c->reading) {
      uv_read_stop(c->stream());
      c->reading = false;
    }
  if (auto done = std::exchange(policy_done_, {})) done(Error::make(ErrorCode::communication, why));
}

void NetRelay::on_bytes(std::string_view bytes) {
  if (failed_) return;
  reader_.feed(bytes);
  while (!failed_) {
    auto f = reader_.next();
    if (!f) return;
    if (!*f) return fail("the guest sent " + f->error().message);
    on_frame(std::move(**f));
  }
}

NetworkStats NetRelay::take_stats() { return std::exchange(stats_, {}); }

void NetRelay::record_denial(const std::string& host, uint16_t port, const std::string& reason) {
  if (stats_.denied.size() < limits::kMaxNetworkDenials)
    stats_.denied.push_back({host.substr(0, limits::kMaxNameBytes), port, reason});
}

void NetRelay::log_decision(const Conn* c, std::string_view name, std::string_view sni, std::string_view address,
                            uint16_t port, std::string_view decision, std::string_view rule, std::string_view why) {
  // A guest that makes refusals its work must not flood the daemon's log:
  // past the budget per window they are counted, and said so once.
  if (decision == "deny") {
    auto now = std::chrono::steady_clock::now();
    if (now - log_window_ > kDenyLogWindow) {
      if (log_suppressed_)
        log_info("net vm=" + vm_name_ + " " + who_ + " " + std::to_string(log_suppressed_) + " more denials not logged");
      log_window_ = now;
      log_denials_ = 0;
      log_suppressed_ = 0;
    }
    if (++log_denials_ > kMaxDenyLogs) {
      ++log_suppressed_;
      return;
    }
  }
  std::string line = "net vm=" + vm_name_ + " " + who_ + " name=" + std::string(name.empty() ? "-" : name) +
                     " sni=" + std::string(sni.empty() ? "-" : sni) + " address=" +
                     std::string(address.empty() ? "-" : address) + " port=" + std::to_string(port) +
                     " decision=" + std::string(decision) + " rule=" + std::string(rule.empty() ? "-" : rule);
  if (c) line += " bytes_in=" + std::to_string(c->bytes_in) + " bytes_out=" + std::to_string(c->bytes_out);
  if (!why.empty()) line += " reason=\"" + std::string(why) + "\"";
  log_info(line);
}

// ---------------------------------------------------------------- policy

Result<void> NetRelay::configure(NetPolicy policy, std::string who, std::function<void(Result<void>)> done) {
  who_ = std::move(who);
  if (failed_ || !channel_) return Error::make(ErrorCode::communication, "the VM's network channel is not open");
  // Host listeners: new mappings get one; a mapping kept keeps its port.
  for (const auto& m : policy.expose) {
    bool have = false;
    for (const auto& e : exposed_) have = have || e.internal == m.internal;
    if (have) continue;
    auto l = std::make_unique<Listener>();
    l->relay = this;
    l->guest_port = m.internal;
    if (m.unix_socket) {
      auto path = listen_unix(*l, policy.owner_uid);
      if (!path) return std::move(path).error();
      exposed_.push_back({m.internal, 0, "unix", "unix:" + *path});
      listeners_.push_back(std::move(l));
      continue;
    }
    l->tcp = UvHandle<uv_tcp_t>::make(l.get(), [&](uv_tcp_t* t) { return uv_tcp_init(loop_, t); });
    if (!l->tcp) return Error::make(ErrorCode::internal, "cannot create a listener");
    sockaddr_in a{};
    uv_ip4_addr("127.0.0.1", static_cast<int>(m.external), &a);
    int rc = uv_tcp_bind(l->tcp.get(), reinterpret_cast<sockaddr*>(&a), 0);
    if (rc == 0)
      rc = uv_listen(reinterpret_cast<uv_stream_t*>(l->tcp.get()), 64, [](uv_stream_t* s, int status) {
        auto* listener = owner_of<Listener>(s);
        if (listener && status == 0) listener->relay->on_expose_accept(s, listener->guest_port);
      });
    if (rc != 0)
      return Error::make(ErrorCode::invalid_argument, "cannot listen on 127.0.0.1:" + std::to_string(m.external) +
                                                          " for guest port " + std::to_string(m.internal) + ": " +
                                                          uv_strerror(rc));
    sockaddr_storage ss{};
    int len = sizeof ss;
    uv_tcp_getsockname(l->tcp.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    uint32_t external = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    exposed_.push_back({m.internal, external, "127.0.0.1", "http://127.0.0.1:" + std::to_string(external)});
    listeners_.push_back(std::move(l));
  }
  policy_ = std::move(policy);
  // Connections the new policy no longer admits end now (a session's
  // network closed or narrowed at run time).
  std::vector<uint32_t> revoked;
  for (const auto& [id, c] : conns_)
    if (c->egress && !c->name.empty() && !rules_admit(policy_.rules, c->name, c->port)) revoked.push_back(id);
  for (uint32_t id : revoked) {
    auto& c = conns_[id];
    log_decision(c.get(), c->name, c->sni, address_text(c->address), c->port, "closed", "", "policy changed");
    send(FrameType::reset, id, reason_byte(ResetReason::denied));
    drop(id);
  }
  net::Policy p;
  p.egress = !policy_.rules.empty();
  if (p.egress) {
    p.ports = rule_ports(policy_.rules);
    p.ports.push_back(net::kProxyPort);
    p.ports.push_back(net::kSocksPort);
  }
  if (auto prev = std::exchange(policy_done_, std::move(done))) prev(ok());
  send(FrameType::policy, 0, net::encode_policy(p));
  return ok();
}

namespace {

// Runs `fn` with the filesystem uid of `uid`, so that what it creates is
// that user's and it can reach only what that user can. The daemon keeps
// CAP_SETUID for QEMU's sake; without it (an unprivileged daemon) files
// are the daemon's own, which is then the caller's too or refused.
template <class Fn>
auto as_fsuid(uid_t uid, Fn&& fn) {
  uid_t before = static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1)));
  ::setfsuid(uid);
  auto r = fn();
  ::setfsuid(before);
  return r;
}

}  // namespace

// An exposed port as a Unix socket only its owner can use: in a directory
// of the owner's own (0700) below the daemon's sticky expose directory,
// mode 0600. On a host with several users a loopback TCP port is anyone's.
Result<std::string> NetRelay::listen_unix(Listener& l, uid_t owner) {
  if (config_->expose_dir.empty()) return Error::make(ErrorCode::invalid_argument, "Unix-socket ports are not configured");
  std::string dir = config_->expose_dir + "/" + std::to_string(owner);
  std::string path = dir + "/" + vm_name_ + "-" + std::to_string(l.guest_port) + ".sock";
  l.pipe = UvHandle<uv_pipe_t>::make(&l, [&](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
  if (!l.pipe) return Error::make(ErrorCode::internal, "cannot create a listener");
  auto made = as_fsuid(owner, [&]() -> Result<void> {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Error::sys("mkdir", dir);
    // Another user may have planted something by that name: only a real
    // directory of the owner's, private to them, will do.
    struct stat st{};
    if (::lstat(dir.c_str(), &st) != 0) return Error::sys("lstat", dir);
    if (!S_ISDIR(st.st_mode) || st.st_uid != owner || (st.st_mode & 077) != 0)
      return Error::make(ErrorCode::permission_denied, dir + " is not a private directory of uid " + std::to_string(owner));
    ::unlink(path.c_str());
    if (int rc = uv_pipe_bind(l.pipe.get(), path.c_str()); rc != 0) return uv_error("bind " + path, rc);
    if (::chmod(path.c_str(), 0600) != 0) return Error::sys("chmod", path);
    return ok();
  });
  if (!made) return std::move(made).error();
  l.path = path;
  l.owner = owner;
  int rc = uv_listen(reinterpret_cast<uv_stream_t*>(l.pipe.get()), 64, [](uv_stream_t* s, int status) {
    auto* listener = owner_of<Listener>(s);
    if (listener && status == 0) listener->relay->on_expose_accept(s, listener->guest_port);
  });
  if (rc != 0) return uv_error("listen " + path, rc);
  return path;
}

NetRelay::Listener::~Listener() {
  if (!path.empty()) as_fsuid(owner, [&] { return ::unlink(path.c_str()); });
}

void NetRelay::on_expose_accept(uv_stream_t* server, uint32_t guest_port) {
  auto c = std::make_shared<Conn>();
  c->relay = this;
  c->egress = false;
  c->port = static_cast<uint16_t>(guest_port);
  if (server->type == UV_NAMED_PIPE)
    c->pipe = UvHandle<uv_pipe_t>::make(c.get(), [&](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
  else
    c->tcp = UvHandle<uv_tcp_t>::make(c.get(), [&](uv_tcp_t* t) { return uv_tcp_init(loop_, t); });
  if (!c->has_peer() || uv_accept(server, c->stream()) != 0) return;
  if (conns_.size() >= config_->max_connections) {
    record_denial("127.0.0.1", c->port, "connection limit");
    return log_decision(nullptr, "", "", "127.0.0.1", c->port, "deny", "", "connection limit");
  }
  c->id = next_id_;
  next_id_ += 2;
  c->state = Conn::State::dialing;
  conns_[c->id] = c;
  ++stats_.connections;
  send(FrameType::open, c->id, net::encode_u16(c->port));
}

// ---------------------------------------------------------------- frames

void NetRelay::on_frame(net::Frame&& f) {
  // A reference of its own: judging may deny, and deny drops the map's.
  auto find = [&]() -> std::shared_ptr<Conn> {
    auto it = conns_.find(f.stream);
    return it == conns_.end() ? nullptr : it->second;
  };
  switch (f.type) {
    case FrameType::policy_ack:
      if (auto done = std::exchange(policy_done_, {})) done(ok());
      return;
    case FrameType::open:
      return on_guest_open(f.stream, f.payload);
    case FrameType::open_ok: {
      auto c = find();
      if (!c || c->egress || c->state != Conn::State::dialing) return;
      c->state = Conn::State::open;
      log_decision(c.get(), "", "", "127.0.0.1", c->port, "expose", "", "");
      return read_peer(*c);
    }
    case FrameType::data: {
      auto c = find();
      if (!c) return;
      c->bytes_out += f.payload.size();
      stats_.bytes_out += f.payload.size();
      c->unacked += f.payload.size();
      // A guest past its credit ignores flow control: it loses the stream.
      if (c->unacked > net::kNetWindow) {
        send(FrameType::reset, c->id, reason_byte(ResetReason::error));
        return drop(c->id);
      }
      if (c->state != Conn::State::open || c->sniff) {
        c->early += f.payload;
        if (c->state == Conn::State::judging) return judge(*c);
        if (c->state == Conn::State::open) sniff(*c);
        return;
      }
      std::weak_ptr<Conn> w = c;
      size_t n = f.payload.size();
      uv_write_string(c->stream(), std::move(f.payload), [w, n](size_t, int status) {
        auto conn = lock(w);
        if (!conn || !conn->relay || status != 0) return;
        conn->unacked -= std::min<uint64_t>(conn->unacked, n);
        conn->relay->send(FrameType::window, conn->id, net::encode_u32(static_cast<uint32_t>(n)));
        if (conn->guest_closed && conn->peer_eof && conn->unacked == 0) conn->relay->drop(conn->id);
      });
      if (c->timer) uv_timer_again(c->timer.get());
      return;
    }
    case FrameType::window: {
      auto c = find();
      auto n = net::decode_u32(f.payload);
      if (!c || !n) return;
      c->guest_credit = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{c->guest_credit} + *n, net::kNetWindow));
      if (c->state == Conn::State::open) read_peer(*c);
      return;
    }
    case FrameType::close: {
      auto c = find();
      if (!c) return;
      c->guest_closed = true;
      if (c->state == Conn::State::judging) return judge(*c);
      if (c->state == Conn::State::open && c->sniff) {
        sniff(*c);
        if (!c->relay) return;
      }
      if (c->state == Conn::State::open) {
        std::weak_ptr<Conn> w = c;
        uv_shutdown_then(c->stream(), [w] {
          auto conn = lock(w);
          if (conn && conn->relay && conn->peer_eof && conn->unacked == 0) conn->relay->drop(conn->id);
        });
      }
      return;
    }
    case FrameType::reset: {
      auto c = find();
      if (!c) return;
      if (!c->egress && c->state == Conn::State::dialing) {
        // Nothing listens on the guest port: the host client is closed at
        // once, and the result counts it.
        record_denial("guest", c->port, "nothing listens on the guest port");
        log_decision(c.get(), "", "", "127.0.0.1", c->port, "refused", "", "nothing listens on the guest port");
      }
      return drop(c->id);
    }
    case FrameType::dns_query:
      return on_dns_query(f.stream, f.payload);
    default:
      return fail("the guest sent a host-only frame");
  }
}

// Reads the peer socket (the outside server, or the host client of an
// exposed port) while the guest has credit for more.
void NetRelay::read_peer(Conn& c) {
  if (c.reading || c.peer_eof || c.guest_credit == 0 || !c.has_peer()) return;
  c.reading = true;
  uv_read_start(
      c.stream(),
      [](uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
        auto* conn = static_cast<Conn*>(h->data);
        size_t n = std::min<size_t>({suggested, net::kMaxNetPayload, conn ? conn->guest_credit : 0});
        buf->base = new char[n ? n : 1];
        buf->len = n;
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        std::unique_ptr<char[]> owned(buf->base);
        auto* conn = static_cast<Conn*>(s->data);
        if (!conn || !conn->relay) return;
        NetRelay* r = conn->relay;
        if (n == UV_ENOBUFS) {
          // No credit left for this read: wait for the guest's window.
          uv_read_stop(s);
          conn->reading = false;
          return;
        }
        if (n > 0) {
          conn->guest_credit -= static_cast<uint32_t>(std::min<size_t>(n, conn->guest_credit));
          conn->bytes_in += static_cast<uint64_t>(n);
          r->stats_.bytes_in += static_cast<uint64_t>(n);
          r->send(FrameType::data, conn->id, {buf->base, static_cast<size_t>(n)});
          if (conn->timer) uv_timer_again(conn->timer.get());
          if (conn->guest_credit == 0) {
            uv_read_stop(s);
            conn->reading = false;
          }
          return;
        }
        if (n == UV_EOF) {
          uv_read_stop(s);
          conn->reading = false;
          conn->peer_eof = true;
          r->send(FrameType::close, conn->id);
          if (conn->guest_closed && conn->unacked == 0) r->drop(conn->id);
          return;
        }
        if (n < 0) {
          r->send(FrameType::reset, conn->id, reason_byte(ResetReason::closed));
          r->drop(conn->id);
        }
      });
}

void NetRelay::drop(uint32_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  auto c = it->second;
  conns_.erase(it);
  if (c->state == Conn::State::open && c->egress)
    log_decision(c.get(), c->name, c->sni, address_text(c->address), c->port, "closed", "", "");
  c->relay = nullptr;
  // The handles close now; their callbacks find no owner.
}

// ---------------------------------------------------------------- egress

void NetRelay::deny(uint32_t id, const std::string& host, uint16_t port, const std::string& reason) {
  record_denial(host, port, reason);
  send(FrameType::reset, id, reason_byte(ResetReason::denied));
  auto it = conns_.find(id);
  if (it != conns_.end()) {
    it->second->relay = nullptr;
    conns_.erase(it);
  }
}

void NetRelay::on_guest_open(uint32_t id, std::string_view payload) {
  auto t = net::decode_open(payload);
  if (!t || id % 2 == 0 || conns_.count(id)) {
    send(FrameType::reset, id, reason_byte(ResetReason::error));
    return;
  }
  std::string addr = address_text(t->address);
  if (policy_.rules.empty()) {
    log_decision(nullptr, "", "", addr, t->port, "deny", "", "no egress policy");
    record_denial(addr, t->port, "network is off");
    return send(FrameType::reset, id, reason_byte(ResetReason::denied));
  }
  if (conns_.size() >= config_->max_connections) {
    log_decision(nullptr, "", "", addr, t->port, "deny", "", "connection limit");
    record_denial(addr, t->port, "connection limit");
    return send(FrameType::reset, id, reason_byte(ResetReason::limit));
  }
  // The guest's proxies: the request names the destination; judged below.
  bool on_loopback = t->address == std::string("\x7f\0\0\x01", 4);
  auto via = !on_loopback                     ? Conn::Via::direct
             : t->port == net::kProxyPort     ? Conn::Via::http_proxy
             : t->port == net::kSocksPort     ? Conn::Via::socks_greeting
                                              : Conn::Via::direct;
  bool proxy = via != Conn::Via::direct;
  auto pin = pins_.find(t->address);
  if (pin == pins_.end() && !proxy) {
    log_decision(nullptr, "", "", addr, t->port, "deny", "", "address not from an allowed name's DNS answer");
    record_denial(addr, t->port, "address not resolved for an allowed name");
    return send(FrameType::reset, id, reason_byte(ResetReason::denied));
  }
  auto c = std::make_shared<Conn>();
  c->relay = this;
  c->id = id;
  c->address = t->address;
  c->port = t->port;
  c->via = via;
  conns_[id] = c;
  ++stats_.connections;
  // Bounded wait for the first bytes (and later the dial).
  c->timer = UvHandle<uv_timer_t>::make(c.get(), [&](uv_timer_t* tm) { return uv_timer_init(loop_, tm); });
  uv_timer_start(c->timer.get(), [](uv_timer_t* tm) {
    auto* conn = owner_of<Conn>(tm);
    if (!conn || !conn->relay) return;
    NetRelay* r = conn->relay;
    if (conn->state == Conn::State::open) {
      r->log_decision(conn, conn->name, conn->sni, address_text(conn->address), conn->port, "closed", "", "idle");
      r->send(FrameType::reset, conn->id, reason_byte(ResetReason::timeout));
      return r->drop(conn->id);
    }
    r->log_decision(conn, conn->name, conn->sni, address_text(conn->address), conn->port, "deny", "", "timeout");
    r->deny(conn->id, address_text(conn->address), conn->port,
            conn->state == Conn::State::judging ? "no request within the connect timeout" : "connect timeout");
  }, static_cast<uint64_t>(config_->connect_timeout.count()), static_cast<uint64_t>(config_->idle_timeout.count()));
  if (!proxy) admit_or_judge(*c);
}

void NetRelay::admit_or_judge(Conn& c) {
  // Web ports carry the name in their first bytes: wait for them. Other
  // ports an entry names explicitly are admitted on the address alone.
  if (c.port == 80 || c.port == 443) {
    if (!c.early.empty() || c.guest_closed) judge(c);
    return;
  }
  std::string addr = address_text(c.address);
  auto pin = pins_.find(c.address);
  const std::string* admitted = nullptr;
  if (pin != pins_.end())
    for (const auto& n : pin->second)
      if (rules_admit(policy_.rules, n, c.port)) admitted = &n;
  if (!admitted) {
    log_decision(nullptr, "", "", addr, c.port, "deny", "", "port not allowed for this address's names");
    return deny(c.id, addr, c.port, "port not allowed");
  }
  c.sniff = true;
  dial(c, *admitted);
}

void NetRelay::flush_early(Conn& c) {
  if (c.early.empty()) return;
  size_t n = c.early.size();
  std::weak_ptr<Conn> w = conns_[c.id];
  uv_write_string(c.stream(), std::exchange(c.early, {}), [w, n](size_t, int status) {
    auto conn = lock(w);
    if (!conn || !conn->relay || status != 0) return;
    conn->unacked -= std::min<uint64_t>(conn->unacked, n);
    conn->relay->send(FrameType::window, conn->id, net::encode_u32(static_cast<uint32_t>(n)));
  });
}

// The first bytes on a port an entry names explicitly, held until judged
// (the server's own first bytes flow meanwhile). Bytes that start like TLS
// (a handshake record) must be a ClientHello whose SNI is allowed on this
// port and bound to this address; a first line that is an HTTP request line
// must head an HTTP/1 request whose Host is, however the rest is sent.
// Anything else is the caller's protocol and passes at once.
void NetRelay::sniff(Conn& c) {
  std::string addr = address_text(c.address);
  bool settled = c.guest_closed;  // no more bytes will come
  if (c.early.empty() && !settled) return;  // connected before the client spoke
  std::optional<std::string> named;
  auto refuse = [&](const std::string& host, const std::string& why) {
    log_decision(nullptr, host, c.sni, addr, c.port, "deny", "", why);
    deny(c.id, host.empty() ? addr : host, c.port, why);
  };
  if (!c.early.empty() && c.early[0] == 0x16) {
    auto t = tls::parse_client_hello(c.early);
    if (t.verdict == tls::Verdict::need_more && !settled && c.early.size() < tls::kMaxHelloBytes) return;
    if (t.verdict != tls::Verdict::sni)
      return refuse("", t.verdict == tls::Verdict::no_sni ? "TLS without SNI" : "not a TLS ClientHello");
    c.sni = t.server_name;
    named = normalize_host_name(t.server_name);
    if (!named) return refuse(t.server_name, "SNI is not a host name");
  } else {
    // The request line decides, whether it ends in CRLF or a bare LF.
    auto nl = c.early.find('\n');
    std::string_view line = std::string_view(c.early).substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto token = line.substr(0, line.find(' '));
    bool upper = !token.empty() && token.size() <= 16 &&
                 std::all_of(token.begin(), token.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; });
    bool method = upper && token.size() < line.size();  // a method and a space
    if (nl == std::string::npos) {
      // No whole line yet: wait while it may still become a request line.
      if (upper && !settled && c.early.size() < http::kMaxHeadBytes) return;
      if (method) return refuse("", "not an HTTP request");
    } else if (method && line.rfind(" HTTP/") != std::string_view::npos) {
      // HTTP/2 with prior knowledge names its server in frames not read
      // here: refused below with anything that is not an HTTP/1 head.
      auto h = http::parse_request_head(c.early);
      if (h.verdict == http::Verdict::need_more && !settled && c.early.size() < http::kMaxHeadBytes) return;
      if (h.verdict == http::Verdict::no_host) return refuse("", "HTTP without Host");
      if (h.verdict != http::Verdict::host) return refuse("", "not an HTTP request");
      named = normalize_host_name(h.host);
      if (!named || (h.has_port && h.port != c.port)) return refuse(h.host, "Host header not a name on this port");
    }
  }
  if (named) {
    if (!rules_admit(policy_.rules, *named, c.port)) return refuse(*named, "name not allowed");
    auto pin = pins_.find(c.address);
    if (pin == pins_.end() || !pin->second.count(*named)) return refuse(*named, "name not bound to this address");
  }
  c.sniff = false;
  flush_early(c);
}

void NetRelay::consume_early(Conn& c, size_t n) {
  n = std::min(n, c.early.size());
  c.early.erase(0, n);
  c.unacked -= std::min<uint64_t>(c.unacked, n);
  send(FrameType::window, c.id, net::encode_u32(static_cast<uint32_t>(n)));
}

void NetRelay::answer_guest(Conn& c, std::string_view bytes) {
  c.guest_credit -= static_cast<uint32_t>(std::min<size_t>(bytes.size(), c.guest_credit));
  send(FrameType::data, c.id, bytes);
}

void NetRelay::connect_named(Conn& c, const std::string& name, uint16_t port, std::function<void(Conn&)> admitted) {
  c.via = Conn::Via::direct;
  c.state = Conn::State::dialing;  // no more judging until the name resolves
  std::weak_ptr<Conn> w = conns_[c.id];
  resolve(name, dns::kTypeA, [w, name, port, admitted = std::move(admitted)](std::vector<std::string> addresses) {
    auto conn = lock(w);
    if (!conn || !conn->relay) return;
    NetRelay* r = conn->relay;
    const std::string* chosen = nullptr;
    for (const auto& a : addresses) {
      if (address_refused(a, r->config_->allowed_ranges)) continue;
      if (!r->pins_.count(a) && r->pins_.size() >= kMaxPinnedAddresses) continue;
      if (auto& names = r->pins_[a]; names.size() < kMaxNamesPerAddress) names.insert(name);
      if (!chosen) chosen = &a;
    }
    if (!chosen) {
      if (!conn->refusal.empty()) r->answer_guest(*conn, conn->refusal);
      r->log_decision(nullptr, name, "", "", port, "deny", "", "proxy request for a name with no usable address");
      return r->deny(conn->id, name, port, "name has no usable address");
    }
    conn->address = *chosen;
    conn->port = port;
    conn->state = Conn::State::judging;
    admitted(*conn);
    if (port == 80 || port == 443) {
      if (!conn->early.empty() || conn->guest_closed) r->judge(*conn);
      return;
    }
    conn->sniff = true;
    r->dial(*conn, name);
  });
}

// A request to the guest's proxy: CONNECT NAME:PORT, or an absolute-form
// HTTP request. The name must be allowed on that port; the daemon resolves
// it (pinning the answer), and the stream then goes on as a direct
// connection to that address, with the same SNI or Host checks.
void NetRelay::judge_proxy(Conn& c) {
  auto h = http::parse_request_head(c.early);
  if (h.verdict == http::Verdict::need_more && !c.guest_closed && c.early.size() < http::kMaxHeadBytes) return;
  if (h.verdict != http::Verdict::host) {
    log_decision(nullptr, "", "", "127.0.0.1", c.port, "deny", "", "not a proxy request");
    return deny(c.id, "proxy", c.port, "not a proxy request");
  }
  bool connect = h.method == "CONNECT";
  uint16_t port = h.has_port ? h.port : 80;
  auto name = normalize_host_name(h.host);
  if (!name || !rules_admit(policy_.rules, *name, port)) {
    log_decision(nullptr, h.host, "", "", port, "deny", "", "proxy request for a name not allowed");
    return deny(c.id, h.host, port, "name not allowed");
  }
  c.refusal = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  connect_named(c, *name, port, [connect](Conn& conn) {
    if (!connect) return;
    // The tunnel's own request is the proxy's business: consumed here, and
    // answered before the client's first bytes.
    NetRelay* r = conn.relay;
    r->consume_early(conn, conn.early.find("\r\n\r\n") + 4);
    r->answer_guest(conn, "HTTP/1.1 200 Connection established\r\n\r\n");
  });
}

// A SOCKS5 client: its greeting (only "no authentication" is served), then
// a CONNECT to a name, judged like the HTTP proxy's, or to an address,
// judged like a direct connection to it.
void NetRelay::judge_socks(Conn& c) {
  if (c.via == Conn::Via::socks_greeting) {
    auto g = socks::parse_greeting(c.early);
    if (g.verdict == socks::Verdict::need_more && !c.guest_closed) return;
    if (g.verdict != socks::Verdict::ok) {
      log_decision(nullptr, "", "", "127.0.0.1", c.port, "deny", "", "not a SOCKS5 request");
      return deny(c.id, "socks", c.port, "not a SOCKS5 request");
    }
    consume_early(c, g.length);
    if (!g.no_auth) {
      answer_guest(c, std::string{socks::kVersion, static_cast<char>(socks::kNoAcceptableMethod)});
      log_decision(nullptr, "", "", "127.0.0.1", c.port, "deny", "", "SOCKS5 without the no-authentication method");
      return deny(c.id, "socks", c.port, "SOCKS5 authentication not offered");
    }
    answer_guest(c, std::string{socks::kVersion, socks::kNoAuthentication});
    c.via = Conn::Via::socks_request;
  }
  auto q = socks::parse_request(c.early);
  if (q.verdict == socks::Verdict::need_more && !c.guest_closed) return;
  if (q.verdict != socks::Verdict::ok || q.command != socks::kConnect) {
    answer_guest(c, socks::reply(q.verdict == socks::Verdict::ok ? socks::kCommandNotSupported : socks::kGeneralFailure));
    log_decision(nullptr, "", "", "127.0.0.1", c.port, "deny", "", "not a SOCKS5 CONNECT");
    return deny(c.id, "socks", c.port, "not a SOCKS5 CONNECT");
  }
  consume_early(c, q.length);
  if (!q.name.empty()) {
    auto name = normalize_host_name(q.name);
    if (!name || !rules_admit(policy_.rules, *name, q.port)) {
      answer_guest(c, socks::reply(socks::kNotAllowed));
      log_decision(nullptr, q.name.substr(0, 253), "", "", q.port, "deny", "", "SOCKS request for a name not allowed");
      return deny(c.id, q.name, q.port, "name not allowed");
    }
    c.refusal = socks::reply(socks::kHostUnreachable);
    return connect_named(c, *name, q.port, [](Conn& conn) { conn.relay->answer_guest(conn, socks::reply(socks::kSucceeded)); });
  }
  // An address the client resolved itself (socks5://): as if it had
  // connected there directly, and refused in the reply when it would be.
  c.via = Conn::Via::direct;
  c.address = q.address;
  c.port = q.port;
  std::string addr = address_text(c.address);
  auto pin = pins_.find(c.address);
  if (pin == pins_.end()) {
    answer_guest(c, socks::reply(socks::kNotAllowed));
    log_decision(nullptr, "", "", addr, c.port, "deny", "", "address not from an allowed name's DNS answer");
    return deny(c.id, addr, c.port, "address not resolved for an allowed name");
  }
  bool web = c.port == 80 || c.port == 443;
  if (!web && std::none_of(pin->second.begin(), pin->second.end(),
                           [&](const std::string& n) { return rules_admit(policy_.rules, n, c.port); })) {
    answer_guest(c, socks::reply(socks::kNotAllowed));
    log_decision(nullptr, "", "", addr, c.port, "deny", "", "port not allowed for this address's names");
    return deny(c.id, addr, c.port, "port not allowed");
  }
  answer_guest(c, socks::reply(socks::kSucceeded));
  admit_or_judge(c);
}

void NetRelay::judge(Conn& c) {
  if (c.via == Conn::Via::http_proxy) return judge_proxy(c);
  if (c.via == Conn::Via::socks_greeting || c.via == Conn::Via::socks_request) return judge_socks(c);
  std::string addr = address_text(c.address);
  std::string name;
  if (c.port == 443) {
    auto h = tls::parse_client_hello(c.early);
    if (h.verdict == tls::Verdict::need_more && !c.guest_closed && c.early.size() < tls::kMaxHelloBytes) return;
    if (h.verdict != tls::Verdict::sni) {
      std::string why = h.verdict == tls::Verdict::no_sni ? "TLS without SNI" : "not a TLS ClientHello";
      log_decision(nullptr, "", "", addr, c.port, "deny", "", why);
      return deny(c.id, addr, c.port, why);
    }
    c.sni = h.server_name;
    auto n = normalize_host_name(h.server_name);
    if (!n) {
      log_decision(nullptr, "", h.server_name, addr, c.port, "deny", "", "SNI is not a host name");
      return deny(c.id, h.server_name, c.port, "SNI is not a host name");
    }
    name = *n;
  } else {
    auto h = http::parse_request_head(c.early);
    if (h.verdict == http::Verdict::need_more && !c.guest_closed && c.early.size() < http::kMaxHeadBytes) return;
    if (h.verdict != http::Verdict::host || h.method == "CONNECT") {
      std::string why = h.verdict == http::Verdict::no_host ? "HTTP without Host" : "not an HTTP request";
      log_decision(nullptr, "", "", addr, c.port, "deny", "", why);
      return deny(c.id, addr, c.port, why);
    }
    auto n = normalize_host_name(h.host);
    if (!n || (h.has_port && h.port != c.port)) {
      log_decision(nullptr, h.host, "", addr, c.port, "deny", "", "Host is not a host name on this port");
      return deny(c.id, h.host, c.port, "Host header not a name on this port");
    }
    name = *n;
  }
  if (!rules_admit(policy_.rules, name, c.port)) {
    log_decision(nullptr, name, c.sni, addr, c.port, "deny", "", "name not allowed");
    return deny(c.id, name, c.port, "name not allowed");
  }
  auto pin = pins_.find(c.address);
  if (pin == pins_.end() || !pin->second.count(name)) {
    log_decision(nullptr, name, c.sni, addr, c.port, "deny", "", "name not bound to this address");
    return deny(c.id, name, c.port, "name not bound to this address");
  }
  dial(c, name);
}

void NetRelay::dial(Conn& c, const std::string& name) {
  std::string addr = address_text(c.address);
  c.name = name;
  if (address_refused(c.address, config_->allowed_ranges)) {
    log_decision(nullptr, name, c.sni, addr, c.port, "deny", "", "special-purpose address");
    return deny(c.id, name, c.port, "special-purpose address");
  }
  std::string rule;
  for (const auto& r : policy_.rules)
    if (rule_admits(r, name, c.port)) rule = to_string(r);
  log_decision(nullptr, name, c.sni, addr, c.port, "allow", rule, "");
  c.state = Conn::State::dialing;
  c.tcp = UvHandle<uv_tcp_t>::make(&c, [&](uv_tcp_t* t) { return uv_tcp_init(loop_, t); });
  sockaddr_storage ss{};
  if (c.address.size() == 4) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(c.port);
    std::memcpy(&a->sin_addr, c.address.data(), 4);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(c.port);
    std::memcpy(&a->sin6_addr, c.address.data(), 16);
  }
  struct Req {
    uv_connect_t req;
    std::weak_ptr<Conn> conn;
  };
  auto* req = new Req{{}, conns_[c.id]};
  req->req.data = req;
  int rc = c.tcp ? uv_tcp_connect(&req->req, c.tcp.get(), reinterpret_cast<sockaddr*>(&ss), [](uv_connect_t* r, int status) {
    std::unique_ptr<Req> owned(static_cast<Req*>(r->data));
    auto conn = lock(owned->conn);
    if (!conn || !conn->relay) return;
    NetRelay* relay = conn->relay;
    if (status != 0) {
      relay->log_decision(conn.get(), conn->name, conn->sni, address_text(conn->address), conn->port, "failed", "",
                          uv_strerror(status));
      relay->record_denial(conn->name, conn->port, std::string("connect failed: ") + uv_strerror(status));
      relay->send(FrameType::reset, conn->id, reason_byte(ResetReason::refused));
      return relay->drop(conn->id);
    }
    conn->state = Conn::State::open;
    uv_tcp_nodelay(conn->tcp.get(), 1);
    uv_timer_again(conn->timer.get());  // from the connect deadline to the idle one
    // What the guest sent while its connection was judged and dialled.
    if (conn->sniff)
      relay->sniff(*conn);
    else
      relay->flush_early(*conn);
    if (!conn->relay) return;  // refused by its first bytes
    if (conn->guest_closed)
      uv_shutdown_then(conn->stream(), [] {});
    relay->read_peer(*conn);
  }) : UV_ENOMEM;
  if (rc != 0) {
    delete req;
    record_denial(name, c.port, "cannot dial");
    send(FrameType::reset, c.id, reason_byte(ResetReason::error));
    drop(c.id);
  }
}

// ---------------------------------------------------------------- DNS

void NetRelay::answer_dns(uint32_t tag, const std::string& answer) { send(FrameType::dns_answer, tag, answer); }

void NetRelay::on_dns_query(uint32_t tag, std::string_view message) {
  if (dns_pending_ >= kMaxDnsPending) return;
  auto q = dns::parse_query(message);
  if (!q) return;  // not a query we answer: the client times out
  auto name = normalize_host_name(q->name);
  bool allowed = name && q->qclass == dns::kClassIN && rules_name(policy_.rules, *name);
  if (!allowed) {
    // No upstream query at all: a lookup cannot carry data out.
    log_decision(nullptr, q->name.substr(0, 253), "", "", 53, "deny", "", "name not allowed (NXDOMAIN)");
    record_denial(q->name, 0, "DNS name not allowed");
    return answer_dns(tag, dns::build_answer(*q, dns::kNxDomain));
  }
  if (q->qtype != dns::kTypeA && q->qtype != dns::kTypeAAAA) return answer_dns(tag, dns::build_answer(*q, dns::kNoError));
  ++dns_pending_;
  std::weak_ptr<NetRelay*> alive = alive_;
  auto query = *q;
  std::string n = *name;
  resolve(n, q->qtype, [alive, tag, query, n](std::vector<std::string> addresses) {
    auto a = alive.lock();
    if (!a || !*a) return;
    NetRelay* self = *a;
    --self->dns_pending_;
    std::vector<std::string> kept;
    for (auto& addr : addresses) {
      if (!self->pins_.count(addr) && self->pins_.size() >= kMaxPinnedAddresses) {
        self->log_decision(nullptr, n, "", address_text(addr), 53, "deny", "", "pin set full");
        self->record_denial(n, 0, "too many addresses pinned");
        return self->answer_dns(tag, dns::build_answer(query, dns::kServFail));
      }
      if (address_refused(addr, self->config_->allowed_ranges)) {
        self->log_decision(nullptr, n, "", address_text(addr), 53, "deny", "", "resolved to a special-purpose address");
        self->record_denial(n, 0, "resolved to a special-purpose address");
        continue;
      }
      if (auto& names = self->pins_[addr]; names.size() < kMaxNamesPerAddress) names.insert(n);
      kept.push_back(std::move(addr));
    }
    self->log_decision(nullptr, n, "", kept.empty() ? "" : address_text(kept.front()), 53, "answer", "", "");
    self->answer_dns(tag, dns::build_answer(query, kept.empty() && addresses.empty() ? dns::kNxDomain : dns::kNoError,
                                            kept, kAnswerTtl));
  });
}

void NetRelay::resolve(const std::string& name, uint16_t qtype, std::function<void(std::vector<std::string>)> done) {
  if (config_->resolver.empty()) {
    struct Req {
      uv_getaddrinfo_t req;
      std::function<void(std::vector<std::string>)> done;
    };
    auto* r = new Req{{}, std::move(done)};
    r->req.data = r;
    addrinfo hints{};
    hints.ai_family = qtype == dns::kTypeA ? AF_INET : AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(loop_, &r->req, [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
      std::unique_ptr<Req> owned(static_cast<Req*>(req->data));
      std::vector<std::string> out;
      for (auto* p = res; status == 0 && p && out.size() < dns::kMaxAddresses; p = p->ai_next) {
        if (p->ai_family == AF_INET)
          out.emplace_back(reinterpret_cast<char*>(&reinterpret_cast<sockaddr_in*>(p->ai_addr)->sin_addr), 4);
        else if (p->ai_family == AF_INET6)
          out.emplace_back(reinterpret_cast<char*>(&reinterpret_cast<sockaddr_in6*>(p->ai_addr)->sin6_addr), 16);
      }
      uv_freeaddrinfo(res);
      owned->done(std::move(out));
    }, name.c_str(), nullptr, &hints);
    if (rc != 0) {
      auto d = std::move(r->done);
      delete r;
      d({});
    }
    return;
  }
  // The configured resolver, over UDP, one query per lookup.
  struct Lookup {
    UvHandle<uv_udp_t> udp;
    UvHandle<uv_timer_t> timer;
    uint16_t id = 0, qtype = 0;
    std::function<void(std::vector<std::string>)> done;
    void finish(std::vector<std::string> out) {
      auto d = std::move(done);
      done = nullptr;
      udp.reset();
      timer.reset();
      if (d) d(std::move(out));
      delete this;
    }
  };
  auto* l = new Lookup;
  static std::mt19937 rng{std::random_device{}()};
  l->id = static_cast<uint16_t>(rng());
  l->qtype = qtype;
  l->done = std::move(done);
  l->udp = UvHandle<uv_udp_t>::make(l, [&](uv_udp_t* u) { return uv_udp_init(loop_, u); });
  l->timer = UvHandle<uv_timer_t>::make(l, [&](uv_timer_t* t) { return uv_timer_init(loop_, t); });
  sockaddr_storage ss{};
  std::string host = config_->resolver, port = "53";
  if (auto colon = host.rfind(':'); colon != std::string::npos && host.find(':') == colon) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  bool parsed = uv_ip4_addr(host.c_str(), std::atoi(port.c_str()), reinterpret_cast<sockaddr_in*>(&ss)) == 0;
  if (!l->udp || !l->timer || !parsed) return l->finish({});
  std::string q = dns::build_query(l->id, name, qtype);
  uv_buf_t buf = uv_buf_init(q.data(), static_cast<unsigned>(q.size()));
  if (uv_udp_try_send(l->udp.get(), &buf, 1, reinterpret_cast<sockaddr*>(&ss)) < 0) return l->finish({});
  uv_udp_recv_start(l->udp.get(), uv_alloc_buffer, [](uv_udp_t* u, ssize_t n, const uv_buf_t* b, const sockaddr*, unsigned) {
    std::unique_ptr<char[]> owned(b->base);
    auto* lk = owner_of<Lookup>(u);
    if (!lk || n <= 0) return;
    auto r = dns::parse_response({b->base, static_cast<size_t>(n)}, lk->id, lk->qtype);
    if (!r) return;  // not our answer: keep waiting until the deadline
    lk->finish(std::move(*r));
  });
  uv_timer_start(l->timer.get(), [](uv_timer_t* t) {
    if (auto* lk = owner_of<Lookup>(t)) lk->finish({});
  }, static_cast<uint64_t>(config_->dns_timeout.count()), 0);
}

}  // namespace sandbox::daemon
