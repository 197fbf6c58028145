#include "agent/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "agent/log.h"
#include "agent/system.h"
#include "common/io.h"
#include "common/net_frame.h"

namespace sandbox::agent {
namespace {

using net::FrameType;

// The stub resolver: glibc with no /etc/resolv.conf asks 127.0.0.1:53.
constexpr uint16_t kDnsPort = 53;
// Pending DNS queries (tags in flight); more are dropped, the client retries.
constexpr size_t kMaxDnsInFlight = 64;
// A TCP DNS client's buffer: one message and its length prefix.
constexpr size_t kMaxDnsTcpBuffer = net::kMaxDnsMessage + 2;

// Epoll keys: the kind in the high half, an id in the low.
enum Kind : uint64_t { kPort = 1, kListener = 2, kStream = 3, kDnsUdp = 4, kDnsTcpListener = 5, kDnsTcp = 6 };
uint64_t key(Kind k, uint32_t id) { return (uint64_t{k} << 32) | id; }

// The AnyIP routes: every destination is local, so a connection to any
// address reaches this relay's listeners, and getsockname() on the accepted
// socket names where the guest meant to go. Without them (network off)
// nothing but loopback is routable.
Result<void> local_route(int family, bool add) {
  unique_fd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!nl) return Error::sys("socket", "netlink");
  struct {
    nlmsghdr nh;
    rtmsg rt;
    char attrs[32];
  } req{};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  req.nh.nlmsg_type = add ? RTM_NEWROUTE : RTM_DELROUTE;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  req.nh.nlmsg_seq = 1;
  req.rt.rtm_family = static_cast<unsigned char>(family);
  req.rt.rtm_dst_len = 0;
  req.rt.rtm_table = RT_TABLE_LOCAL;
  req.rt.rtm_protocol = RTPROT_STATIC;
  req.rt.rtm_scope = RT_SCOPE_HOST;
  req.rt.rtm_type = RTN_LOCAL;
  auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) + NLMSG_ALIGN(req.nh.nlmsg_len));
  rta->rta_type = RTA_OIF;
  rta->rta_len = RTA_LENGTH(sizeof(int));
  int lo = static_cast<int>(::if_nametoindex("lo"));
  std::memcpy(RTA_DATA(rta), &lo, sizeof lo);
  req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
  if (::send(nl.get(), &req, req.nh.nlmsg_len, 0) < 0) return Error::sys("send", "netlink");
  char buf[512];
  ssize_t n = ::recv(nl.get(), buf, sizeof buf, 0);
  if (n < static_cast<ssize_t>(sizeof(nlmsghdr))) return Error::sys("recv", "netlink");
  auto* h = reinterpret_cast<nlmsghdr*>(buf);
  if (h->nlmsg_type == NLMSG_ERROR) {
    int err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
    // Removing a route that is not there is the goal reached.
    if (err != 0 && !(err == ESRCH && !add)) {
      errno = err;
      return Error::sys(add ? "RTM_NEWROUTE" : "RTM_DELROUTE", family == AF_INET ? "local 0.0.0.0/0" : "local ::/0");
    }
  }
  return ok();
}

struct Stream {
  unique_fd fd;
  uint32_t credit = net::kNetWindow;  // bytes we may still send the host
  std::string pending;                // from the host, not yet written
  bool read_eof = false;              // the socket said EOF (close sent)
  bool host_closed = false;           // the host said close
  bool connected = true;
  uint32_t interest = 0;
};

struct DnsTcp {
  unique_fd fd;
  std::string in;
};

class Relay {
 public:
  explicit Relay(unique_fd port) : port_(std::move(port)) {}

  [[noreturn]] void run() {
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    add(port_.get(), EPOLLIN, key(kPort, 0));
    epoll_event events[32];
    for (;;) {
      int n = ::epoll_wait(epoll_.get(), events, 32, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fatal("epoll_wait");
      for (int i = 0; i < n; ++i) dispatch(events[i].data.u64, events[i].events);
    }
  }

 private:
  [[noreturn]] void fatal(const char* what) {
    log("net relay: %s: %s", what, std::strerror(errno));
    ::_exit(1);
  }
  void add(int fd, uint32_t ev, uint64_t k) {
    epoll_event e{};
    e.events = ev;
    e.data.u64 = k;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e);
  }
  void mod(int fd, uint32_t ev, uint64_t k) {
    epoll_event e{};
    e.events = ev;
    e.data.u64 = k;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &e);
  }
  void del(int fd) { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

  void send(FrameType t, uint32_t stream, std::string_view payload = {}) {
    // A host that stopped reading leaves nothing to relay for: give up.
    if (!write_all(port_.get(), net::encode_frame(t, stream, payload), "net port")) fatal("writing the net port");
  }

  void dispatch(uint64_t k, uint32_t events) {
    auto kind = static_cast<Kind>(k >> 32);
    auto id = static_cast<uint32_t>(k);
    switch (kind) {
      case kPort: return on_port();
      case kListener: return on_accept(static_cast<int>(id));
      case kStream: return on_stream(id, events);
      case kDnsUdp: return on_dns_udp(static_cast<int>(id));
      case kDnsTcpListener: return on_dns_tcp_accept(static_cast<int>(id));
      case kDnsTcp: return on_dns_tcp(static_cast<int>(id));
    }
  }

  void on_port() {
    char buf[64 << 10];
    ssize_t n = ::read(port_.get(), buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      ::usleep(10'000);  // host not connected: wait rather than spin
      return;
    }
    reader_.feed({buf, static_cast<size_t>(n)});
    while (auto f = reader_.next()) {
      if (!*f) {
        log("net relay: %s", f->error().message.c_str());
        ::_exit(1);
      }
      on_frame(std::move(**f));
    }
  }

  void on_frame(net::Frame&& f) {
    switch (f.type) {
      case FrameType::policy: {
        if (auto p = net::decode_policy(f.payload)) apply(*p);
        return send(FrameType::policy_ack, 0);
      }
      case FrameType::open: {
        auto port = net::decode_u16(f.payload);
        if (!port) return send(FrameType::reset, f.stream, std::string(1, char(net::ResetReason::error)));
        return open_exposed(f.stream, *port);
      }
      case FrameType::open_ok: return;  // our streams are connected already
      case FrameType::data: {
        auto it = streams_.find(f.stream);
        if (it == streams_.end()) return;
        it->second.pending += f.payload;
        return flush(f.stream, it->second);
      }
      case FrameType::window: {
        auto it = streams_.find(f.stream);
        auto n = net::decode_u32(f.payload);
        if (it == streams_.end() || !n) return;
        it->second.credit = std::min<uint64_t>(uint64_t{it->second.credit} + *n, net::kNetWindow);
        return update(f.stream, it->second);
      }
      case FrameType::close: {
        auto it = streams_.find(f.stream);
        if (it == streams_.end()) return;
        it->second.host_closed = true;
        return flush(f.stream, it->second);
      }
      case FrameType::reset: {
        auto it = streams_.find(f.stream);
        if (it == streams_.end()) return;
        // An abortive close: the guest client sees a reset, not an EOF.
        linger l{1, 0};
        ::setsockopt(it->second.fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
        return drop(f.stream, false);
      }
      case FrameType::dns_answer: return on_dns_answer(f.stream, f.payload);
      default: return;
    }
  }

  // --- policy

  void apply(const net::Policy& p) {
    for (int family : {AF_INET, AF_INET6})
      if (auto r = local_route(family, p.egress); !r) log("net relay: %s", r.error().message.c_str());
    std::set<uint16_t> want;
    if (p.egress) want.insert(p.ports.begin(), p.ports.end());
    for (auto it = listeners_.begin(); it != listeners_.end();) {
      if (!want.count(it->second)) {
        del(it->first);
        ::close(it->first);
        it = listeners_.erase(it);
      } else {
        ++it;
      }
    }
    std::set<uint16_t> have;
    for (auto& [fd, port] : listeners_) have.insert(port);
    for (uint16_t port : want)
      if (!have.count(port)) {
        for (int family : {AF_INET, AF_INET6})
          if (int fd = listen_on(family, SOCK_STREAM, port, false); fd >= 0) {
            listeners_[fd] = port;
            add(fd, EPOLLIN, key(kListener, static_cast<uint32_t>(fd)));
          }
      }
    if (p.egress && !dns_up_) {
      dns_up_ = true;
      for (int family : {AF_INET, AF_INET6}) {
        if (int fd = listen_on(family, SOCK_DGRAM, kDnsPort, true); fd >= 0)
          add(fd, EPOLLIN, key(kDnsUdp, static_cast<uint32_t>(fd)));
        if (int fd = listen_on(family, SOCK_STREAM, kDnsPort, true); fd >= 0)
          add(fd, EPOLLIN, key(kDnsTcpListener, static_cast<uint32_t>(fd)));
      }
    }
  }

  // A listener on every address (egress) or on loopback only (the DNS stub:
  // a query sent to any other resolver address finds nobody).
  int listen_on(int family, int type, uint16_t port, bool loopback) {
    int fd = ::socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (family == AF_INET) {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = htonl(loopback ? INADDR_LOOPBACK : INADDR_ANY);
      rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_port = htons(port);
      a.sin6_addr = loopback ? in6addr_loopback : in6addr_any;
      rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0 || (type == SOCK_STREAM && ::listen(fd, 128) != 0)) {
      log("net relay: cannot listen on port %u: %s", port, std::strerror(errno));
      ::close(fd);
      return -1;
    }
    return fd;
  }

  // --- streams

  void on_accept(int lfd) {
    for (;;) {
      int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        ::close(fd);
        continue;
      }
      net::OpenTarget t;
      if (ss.ss_family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        t.family = 4;
        t.address.assign(reinterpret_cast<char*>(&a->sin_addr), 4);
        t.port = ntohs(a->sin_port);
      } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        t.family = 6;
        t.address.assign(reinterpret_cast<char*>(&a->sin6_addr), 16);
        t.port = ntohs(a->sin6_port);
      }
      uint32_t id = next_id_;
      next_id_ += 2;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      Stream s;
      s.fd.reset(fd);
      streams_.emplace(id, std::move(s));
      send(FrameType::open, id, net::encode_open(t));
      add(fd, 0, key(kStream, id));
      update(id, streams_.at(id));
    }
  }

  // The host's connection to an exposed port: a server in the guest may
  // listen on 127.0.0.1, ::1 or any address.
  void open_exposed(uint32_t id, uint16_t port) {
    int fd = -1;
    for (int family : {AF_INET, AF_INET6}) {
      fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      // Loopback connects at once or is refused at once; this only bounds
      // a full accept queue.
      timeval tv{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      int rc;
      if (family == AF_INET) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
      } else {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(port);
        a.sin6_addr = in6addr_loopback;
        rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
      }
      if (rc == 0) break;
      ::close(fd);
      fd = -1;
    }
    if (fd < 0) return send(FrameType::reset, id, std::string(1, char(net::ResetReason::refused)));
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Stream s;
    s.fd.reset(fd);
    streams_.emplace(id, std::move(s));
    send(FrameType::open_ok, id);
    add(fd, 0, key(kStream, id));
    update(id, streams_.at(id));
  }

  void update(uint32_t id, Stream& s) {
    uint32_t want = 0;
    if (!s.read_eof && s.credit > 0) want |= EPOLLIN;
    if (!s.pending.empty()) want |= EPOLLOUT;
    if (want != s.interest) {
      s.interest = want;
      mod(s.fd.get(), want, key(kStream, id));
    }
  }

  void on_stream(uint32_t id, uint32_t events) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = it->second;
    if (events & EPOLLOUT) {
      flush(id, s);
      if (!streams_.count(id)) return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !s.read_eof && s.credit > 0) {
      char buf[net::kMaxNetPayload];
      ssize_t n = ::read(s.fd.get(), buf, std::min<size_t>(sizeof buf, s.credit));
      if (n > 0) {
        s.credit -= static_cast<uint32_t>(n);
        send(FrameType::data, id, {buf, static_cast<size_t>(n)});
      } else if (n == 0) {
        s.read_eof = true;
        send(FrameType::close, id);
      } else if (errno != EAGAIN && errno != EINTR) {
        send(FrameType::reset, id, std::string(1, char(net::ResetReason::closed)));
        return drop(id, false);
      }
    } else if ((events & (EPOLLHUP | EPOLLERR)) && s.pending.empty() && s.read_eof) {
      // The guest's end is gone for good: the host's end goes too.
      send(FrameType::reset, id, std::string(1, char(net::ResetReason::closed)));
      return drop(id, false);
    }
    maybe_done(id, s);
  }

  void flush(uint32_t id, Stream& s) {
    size_t written = 0;
    while (!s.pending.empty()) {
      ssize_t n = ::write(s.fd.get(), s.pending.data(), s.pending.size());
      if (n > 0) {
        s.pending.erase(0, static_cast<size_t>(n));
        written += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;
      send(FrameType::reset, id, std::string(1, char(net::ResetReason::closed)));
      return drop(id, false);
    }
    if (written) send(FrameType::window, id, net::encode_u32(static_cast<uint32_t>(written)));
    if (s.pending.empty() && s.host_closed) ::shutdown(s.fd.get(), SHUT_WR);
    update(id, s);
    maybe_done(id, s);
  }

  void maybe_done(uint32_t id, Stream& s) {
    if (s.read_eof && s.host_closed && s.pending.empty()) drop(id, false);
  }

  void drop(uint32_t id, bool) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    del(it->second.fd.get());
    streams_.erase(it);
  }

  // --- the DNS stub: every query goes to the host, which answers

  void on_dns_udp(int fd) {
    for (;;) {
      char buf[net::kMaxDnsMessage];
      sockaddr_storage from{};
      socklen_t len = sizeof from;
      ssize_t n = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) return;
      if (dns_.size() >= kMaxDnsInFlight) continue;
      uint32_t tag = next_tag_++;
      dns_[tag] = DnsClient{fd, from, len, -1};
      send(FrameType::dns_query, tag, {buf, static_cast<size_t>(n)});
    }
  }

  void on_dns_tcp_accept(int lfd) {
    for (;;) {
      int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;
      if (dns_tcp_.size() >= kMaxDnsInFlight) {
        ::close(fd);
        continue;
      }
      dns_tcp_[fd].fd.reset(fd);
      add(fd, EPOLLIN, key(kDnsTcp, static_cast<uint32_t>(fd)));
    }
  }

  void on_dns_tcp(int fd) {
    auto it = dns_tcp_.find(fd);
    if (it == dns_tcp_.end()) return;
    char buf[kMaxDnsTcpBuffer];
    ssize_t n = ::read(fd, buf, sizeof buf - it->second.in.size());
    if (n <= 0) {
      if (n < 0 && errno == EAGAIN) return;
      del(fd);
      dns_tcp_.erase(it);
      return;
    }
    auto& in = it->second.in;
    in.append(buf, static_cast<size_t>(n));
    while (in.size() >= 2) {
      size_t len = (static_cast<unsigned char>(in[0]) << 8) | static_cast<unsigned char>(in[1]);
      if (len > net::kMaxDnsMessage) {
        del(fd);
        dns_tcp_.erase(it);
        return;
      }
      if (in.size() < 2 + len) break;
      if (dns_.size() < kMaxDnsInFlight) {
        uint32_t tag = next_tag_++;
        dns_[tag] = DnsClient{-1, {}, 0, fd};
        send(FrameType::dns_query, tag, in.substr(2, len));
      }
      in.erase(0, 2 + len);
    }
  }

  void on_dns_answer(uint32_t tag, std::string_view answer) {
    auto it = dns_.find(tag);
    if (it == dns_.end()) return;
    DnsClient c = it->second;
    dns_.erase(it);
    if (c.udp >= 0) {
      ::sendto(c.udp, answer.data(), answer.size(), 0, reinterpret_cast<const sockaddr*>(&c.from), c.from_len);
    } else if (dns_tcp_.count(c.tcp)) {
      std::string out = net::encode_u16(static_cast<uint16_t>(answer.size()));
      out += answer;
      // Small and on loopback: the socket buffer takes it whole.
      (void)::write(c.tcp, out.data(), out.size());
    }
  }

  struct DnsClient {
    int udp = -1;
    sockaddr_storage from{};
    socklen_t from_len = 0;
    int tcp = -1;
  };

  unique_fd port_, epoll_;
  net::FrameReader reader_;
  std::map<uint32_t, Stream> streams_;
  std::map<int, uint16_t> listeners_;  // fd -> port
  std::map<uint32_t, DnsClient> dns_;
  std::map<int, DnsTcp> dns_tcp_;
  uint32_t next_id_ = 1;  // the guest's streams are odd
  uint32_t next_tag_ = 1;
  bool dns_up_ = false;
};

}  // namespace

Result<void> start_net_relay() {
  auto path = find_virtio_port(net::kNetPortName, 2'000);
  if (!path) return std::move(path).error();
  unique_fd port(::open(path->c_str(), O_RDWR | O_CLOEXEC));
  if (!port) return Error::sys("open", *path);
  pid_t pid = ::fork();
  if (pid < 0) return Error::sys("fork", "net relay");
  if (pid > 0) return ok();
  // The relay: SIGCHLD is the agent's business, and the relay ends with it.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::prctl(PR_SET_NAME, "sandbox-net");
  Relay(std::move(port)).run();
}

}  // namespace sandbox::agent
