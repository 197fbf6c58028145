// The daemon's half of a VM's network against a scripted guest on a
// socketpair, with a DNS server and a TCP echo server of the test's own on
// loopback: the policy decisions of daemon/net_relay.cc without a VM.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "common/io.h"
#include "common/net_frame.h"
#include "daemon/dns_message.h"
#include "daemon/net_relay.h"
#include "daemon/socks.h"

using namespace sandbox;
using namespace sandbox::daemon;
using net::FrameType;

namespace {

// Answers A queries for its names; counts every query it gets.
class DnsServer {
 public:
  explicit DnsServer(std::map<std::string, std::string> names) : names_(std::move(names)) {
    fd_.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~DnsServer() {
    stop_ = true;
    thread_.join();
  }
  uint16_t port() const { return port_; }
  int queries() const { return queries_; }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char buf[1500];
      sockaddr_in from{};
      socklen_t len = sizeof from;
      ssize_t n = ::recvfrom(fd_.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) continue;
      ++queries_;
      auto q = dns::parse_query({buf, static_cast<size_t>(n)});
      if (!q) continue;
      auto it = names_.find(q->name);
      std::string answer = it == names_.end() ? dns::build_answer(*q, dns::kNxDomain)
                                              : dns::build_answer(*q, dns::kNoError, {*parse_address(it->second)});
      ::sendto(fd_.get(), answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  }
  std::map<std::string, std::string> names_;
  unique_fd fd_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> queries_{0};
};

// Echoes one connection at a time on 127.0.0.1.
class EchoServer {
 public:
  EchoServer() {
    fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_.get(), 8);
    socklen_t len = sizeof a;
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, 20) <= 0) continue;
        unique_fd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        char buf[4096];
        ssize_t n;
        while ((n = ::read(c.get(), buf, sizeof buf)) > 0) (void)write_all(c.get(), {buf, static_cast<size_t>(n)});
      }
    });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  unique_fd fd_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

// The guest end of the channel, driven by the test, and the loop the relay runs on.
struct Guest {
  uv_loop_t loop{};
  NetConfig config;
  std::unique_ptr<NetRelay> relay;
  unique_fd fd;
  net::FrameReader reader;

  explicit Guest(uint16_t dns_port) {
    uv_loop_init(&loop);
    config.resolver = "127.0.0.1:" + std::to_string(dns_port);
    config.allowed_ranges = {*parse_cidr("127.0.0.0/8")};
    config.connect_timeout = std::chrono::milliseconds(2000);
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    fd.reset(sv[1]);
    relay = std::make_unique<NetRelay>(&loop, &config, "vm-test");
    REQUIRE(relay->open(unique_fd(sv[0])).ok());
  }
  ~Guest() {
    relay.reset();
    fd.reset();
    for (int i = 0; i < 10; ++i) uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
  }
  void send(FrameType t, uint32_t stream, std::string_view payload = {}) {
    REQUIRE(write_all(fd.get(), net::encode_frame(t, stream, payload)).ok());
  }
  // Runs the loop until the relay sends a frame; nullopt after 5 s.
  std::optional<net::Frame> next() {
    for (int i = 0; i < 500; ++i) {
      if (auto f = reader.next()) {
        REQUIRE(f->ok());
        return std::move(**f);
      }
      uv_run(&loop, UV_RUN_NOWAIT);
      pollfd p{fd.get(), POLLIN, 0};
      if (::poll(&p, 1, 10) > 0) {
        char buf[65536];
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n > 0) reader.feed({buf, static_cast<size_t>(n)});
      }
    }
    return std::nullopt;
  }
  // The next frame that is not credit.
  std::optional<net::Frame> next_not_window() {
    for (;;) {
      auto f = next();
      if (!f || f->type != FrameType::window) return f;
    }
  }
  void apply(NetPolicy p) {
    bool done = false;
    REQUIRE(relay->configure(std::move(p), "uid=0 run=1", [&](Result<void> r) { done = r.ok(); }).ok());
    auto f = next();
    REQUIRE(f);
    REQUIRE(f->type == FrameType::policy);
    send(FrameType::policy_ack, 0);
    for (int i = 0; i < 100 && !done; ++i) uv_run(&loop, UV_RUN_NOWAIT), ::usleep(1000);
    CHECK(done);
  }
  std::vector<std::string> lookup(const std::string& name, uint32_t tag) {
    send(FrameType::dns_query, tag, dns::build_query(static_cast<uint16_t>(tag), name, dns::kTypeA));
    auto f = next();
    REQUIRE(f);
    REQUIRE(f->type == FrameType::dns_answer);
    CHECK(f->stream == tag);
    auto r = dns::parse_response(f->payload, static_cast<uint16_t>(tag), dns::kTypeA);
    REQUIRE(r);
    return *r;
  }
  void open(uint32_t id, const std::string& address, uint16_t port) {
    auto a = *parse_address(address);
    send(FrameType::open, id, net::encode_open({static_cast<uint8_t>(a.size() == 4 ? 4 : 6), a, port}));
  }
};

std::string seed(const std::string& name) {
  std::ifstream f(std::string(SANDBOXD_SOURCE_DIR) + "/fuzz/corpus/fuzz_tls_hello/" + name, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool has_denial(const NetworkStats& s, const std::string& reason) {
  for (const auto& d : s.denied)
    if (d.reason.find(reason) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("net relay: DNS answers allowed names only, and unlisted names never reach the resolver") {
  DnsServer dns_server({{"echo.test", "127.0.0.7"}, {"other.test", "127.0.0.8"}});
  Guest g(dns_server.port());
  g.apply({*parse_domain_rules({"echo.test"}), {}});
  CHECK(g.lookup("unlisted.test", 1).empty());
  CHECK(g.lookup("other.test", 2).empty());
  CHECK(g.lookup("data-in-a-label.echo.test", 3).empty());
  CHECK(dns_server.queries() == 0);
  auto a = g.lookup("echo.test", 4);
  REQUIRE(a.size() == 1);
  CHECK(address_text(a[0]) == "127.0.0.7");
  CHECK(dns_server.queries() == 1);
  auto stats = g.relay->take_stats();
  CHECK(has_denial(stats, "DNS name not allowed"));
}

TEST_CASE("net relay: connections go only to pinned addresses, on allowed ports, with the right name") {
  EchoServer echo;
  DnsServer dns_server({{"echo.test", "127.0.0.1"}, {"other.test", "127.0.0.9"}});
  Guest g(dns_server.port());
  std::string rule = "echo.test:" + std::to_string(echo.port());
  g.apply({*parse_domain_rules({rule, "echo.test", "other.test"}), {}});

  // Direct IP, before any lookup: refused.
  g.open(1, "127.0.0.1", echo.port());
  auto f = g.next();
  REQUIRE(f);
  CHECK(f->type == FrameType::reset);
  CHECK(f->stream == 1);

  REQUIRE(g.lookup("echo.test", 10).size() == 1);
  // Pinned, on the entry's port: relayed to the echo server and back.
  g.open(3, "127.0.0.1", echo.port());
  g.send(FrameType::data, 3, "ping");
  f = g.next_not_window();
  REQUIRE(f);
  CHECK(f->type == FrameType::data);
  CHECK(f->payload == "ping");
  g.send(FrameType::window, 3, net::encode_u32(4));
  g.send(FrameType::close, 3);
  f = g.next_not_window();
  REQUIRE(f);
  CHECK(f->type == FrameType::close);

  // Pinned address, port the entry does not name: refused.
  g.open(5, "127.0.0.1", 9);
  f = g.next();
  REQUIRE(f);
  CHECK(f->type == FrameType::reset);

  // TLS on 443: no SNI, an SNI for another allowed name than the address's,
  // and an SNI that is not allowed are all refused before any dial.
  REQUIRE(g.lookup("other.test", 11).size() == 1);
  for (auto [id, hello] : {std::pair<uint32_t, std::string>{7, seed("hello_no_sni")},
                           std::pair<uint32_t, std::string>{9, seed("hello_sni")},
                           std::pair<uint32_t, std::string>{11, seed("not_tls")}}) {
    g.open(id, "127.0.0.9", 443);
    g.send(FrameType::data, id, hello);
    f = g.next_not_window();
    REQUIRE(f);
    CHECK(f->type == FrameType::reset);
    CHECK(f->stream == id);
  }
  // Plain HTTP with a Host of another name: refused.
  g.open(13, "127.0.0.9", 80);
  g.send(FrameType::data, 13, "GET / HTTP/1.1\r\nHost: echo.test\r\n\r\n");
  f = g.next_not_window();
  REQUIRE(f);
  CHECK(f->type == FrameType::reset);

  auto stats = g.relay->take_stats();
  CHECK(stats.bytes_out >= 4);
  CHECK(stats.bytes_in == 4);
  CHECK(has_denial(stats, "address not resolved for an allowed name"));
  CHECK(has_denial(stats, "TLS without SNI"));
  CHECK(has_denial(stats, "name not allowed"));  // SNI example.org
  CHECK(has_denial(stats, "not a TLS ClientHello"));
  CHECK(has_denial(stats, "name not bound to this address"));
}

TEST_CASE("net relay: on a port an entry names, TLS and HTTP must name an allowed server; other protocols pass") {
  EchoServer echo;
  DnsServer dns_server({{"echo.test", "127.0.0.1"}, {"other.test", "127.0.0.1"}});
  Guest g(dns_server.port());
  std::string port = std::to_string(echo.port());
  g.apply({*parse_domain_rules({"echo.test:" + port, "other.test"}), {}});
  REQUIRE(g.lookup("echo.test", 10).size() == 1);
  REQUIRE(g.lookup("other.test", 11).size() == 1);
  auto echoed = [&](uint32_t id, const std::string& bytes) {
    g.open(id, "127.0.0.1", echo.port());
    g.send(FrameType::data, id, bytes);
    std::string got;
    while (got.size() < bytes.size()) {
      auto f = g.next_not_window();
      REQUIRE(f);
      if (f->stream != id) continue;
      REQUIRE(f->type == FrameType::data);
      got += f->payload;
    }
    CHECK(got == bytes);
    g.send(FrameType::window, id, net::encode_u32(static_cast<uint32_t>(got.size())));
    g.send(FrameType::close, id);  // the echo server serves one connection at a time
  };
  auto refused = [&](uint32_t id, const std::string& bytes) {
    g.open(id, "127.0.0.1", echo.port());
    g.send(FrameType::data, id, bytes);
    auto f = g.next_not_window();
    while (f && f->stream != id) f = g.next_not_window();
    REQUIRE(f);
    CHECK_MESSAGE(f->type == FrameType::reset, id);
  };
  // A line of another protocol is passed on at once (its client may wait
  // for an answer), and so is an HTTP request for the entry's name.
  echoed(1, "EHLO client.test\r\n");
  echoed(3, "GET / HTTP/1.1\r\nHost: echo.test:" + port + "\r\n\r\n");
  // A ClientHello for a name not allowed, one without SNI, and HTTP for a
  // name allowed on the web ports only: refused, though the address is pinned.
  refused(5, seed("hello_sni"));
  refused(7, seed("hello_no_sni"));
  refused(9, "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n");
  refused(11, "GET / HTTP/1.1\r\nHost: echo.test:80\r\n\r\n");
  // Ways around the parsers are refused too: a head padded past its bound,
  // HTTP/2 with prior knowledge, a handshake record that is no ClientHello,
  // and a bare-LF request ended by a half-close.
  refused(13, "GET / HTTP/1.1\r\nX-Pad: " + std::string(20000, 'a') + "\r\nHost: other.test\r\n\r\n");
  refused(15, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  refused(17, std::string("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 10));
  // A client that speaks only once the server's side is connected.
  g.open(21, "127.0.0.1", echo.port());
  for (int i = 0; i < 100; ++i) uv_run(&g.loop, UV_RUN_NOWAIT), ::usleep(2000);
  g.send(FrameType::data, 21, seed("hello_sni"));
  auto late = g.next_not_window();
  while (late && late->stream != 21) late = g.next_not_window();
  REQUIRE(late);
  CHECK(late->type == FrameType::reset);
  g.open(19, "127.0.0.1", echo.port());
  g.send(FrameType::data, 19, "GET / HTTP/1.1\nHost: other.test\n\n");
  g.send(FrameType::close, 19);
  auto f = g.next_not_window();
  while (f && f->stream != 19) f = g.next_not_window();
  REQUIRE(f);
  CHECK(f->type == FrameType::reset);
  auto stats = g.relay->take_stats();
  CHECK(has_denial(stats, "TLS without SNI"));
  CHECK(has_denial(stats, "name not allowed"));
  CHECK(has_denial(stats, "Host header not a name on this port"));
}

TEST_CASE("net relay: special-purpose answers are dropped unless the operator allows their range") {
  DnsServer dns_server({{"inside.test", "10.1.2.3"}, {"loop.test", "127.0.0.5"}});
  Guest g(dns_server.port());
  g.apply({*parse_domain_rules({"inside.test", "loop.test"}), {}});
  CHECK(g.lookup("inside.test", 1).empty());  // 10/8 is not allowed by the config
  CHECK(g.lookup("loop.test", 2).size() == 1);
  g.open(1, "10.1.2.3", 443);
  auto f = g.next();
  REQUIRE(f);
  CHECK(f->type == FrameType::reset);
  CHECK(has_denial(g.relay->take_stats(), "special-purpose"));
}

TEST_CASE("net relay: an exposed port listens on 127.0.0.1; a guest port with no listener closes at once") {
  DnsServer dns_server({});
  Guest g(dns_server.port());
  g.apply({{}, {{8080, 0}}});
  REQUIRE(g.relay->exposed().size() == 1);
  auto port = g.relay->exposed()[0].external;
  CHECK(port >= 1024);
  CHECK(g.relay->exposed()[0].url == "http://127.0.0.1:" + std::to_string(port));
  unique_fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  auto f = g.next();
  REQUIRE(f);
  CHECK(f->type == FrameType::open);
  CHECK(f->stream % 2 == 0);
  CHECK(net::decode_u16(f->payload) == 8080);
  // Accepted by the guest: bytes flow both ways.
  g.send(FrameType::open_ok, f->stream);
  uint32_t id = f->stream;
  REQUIRE(write_all(c.get(), "hi").ok());
  f = g.next_not_window();
  REQUIRE(f);
  CHECK(f->type == FrameType::data);
  CHECK(f->payload == "hi");
  g.send(FrameType::data, id, "there");
  for (int i = 0; i < 50; ++i) uv_run(&g.loop, UV_RUN_NOWAIT), ::usleep(2000);
  char buf[16] = {};
  CHECK(::recv(c.get(), buf, sizeof buf, MSG_DONTWAIT) == 5);
  // A second connection the guest refuses (nothing listens): closed, counted.
  unique_fd c2(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(c2.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  f = g.next_not_window();
  REQUIRE(f);
  REQUIRE(f->type == FrameType::open);
  g.send(FrameType::reset, f->stream, std::string(1, '\1'));
  for (int i = 0; i < 50; ++i) uv_run(&g.loop, UV_RUN_NOWAIT), ::usleep(2000);
  pollfd p{c2.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 1000) == 1);
  CHECK(::read(c2.get(), buf, sizeof buf) <= 0);
  CHECK(has_denial(g.relay->take_stats(), "nothing listens"));
}

TEST_CASE("net relay: a guest that breaks the framing loses its channel, not the daemon") {
  DnsServer dns_server({});
  Guest g(dns_server.port());
  g.apply({*parse_domain_rules({"a.test"}), {}});
  REQUIRE(write_all(g.fd.get(), std::string("\x7f\0\0\0\0\0\0\1\0\0\0\0", 12)).ok());
  for (int i = 0; i < 20; ++i) uv_run(&g.loop, UV_RUN_NOWAIT), ::usleep(1000);
  CHECK(!g.relay->configure({}, "x", [](Result<void>) {}).ok());
}

TEST_CASE("net relay: the guest's proxy port takes CONNECT to an allowed name only, then relays like a direct connection") {
  EchoServer echo;
  DnsServer dns_server({{"echo.test", "127.0.0.1"}, {"other.test", "127.0.0.1"}});
  Guest g(dns_server.port());
  std::string port = std::to_string(echo.port());
  g.apply({*parse_domain_rules({"echo.test:" + port}), {}});
  g.open(1, "127.0.0.1", net::kProxyPort);
  g.send(FrameType::data, 1, "CONNECT echo.test:" + port + " HTTP/1.1\r\nHost: echo.test:" + port + "\r\n\r\n");
  auto f = g.next_not_window();
  REQUIRE(f);
  CHECK(f->type == FrameType::data);
  CHECK(f->payload == "HTTP/1.1 200 Connection established\r\n\r\n");
  g.send(FrameType::data, 1, "tunnel");
  f = g.next_not_window();
  REQUIRE(f);
  CHECK(f->payload == "tunnel");
  // Another name, a port the entry does not name, and a non-proxy request: refused.
  for (auto [id, request] : {std::pair<uint32_t, std::string>{3, "CONNECT other.test:" + port + " HTTP/1.1\r\n\r\n"},
                             std::pair<uint32_t, std::string>{5, "CONNECT echo.test:22 HTTP/1.1\r\n\r\n"},
                             std::pair<uint32_t, std::string>{7, "\x16\x03\x01\x00\x05hello"}}) {
    g.open(id, "127.0.0.1", net::kProxyPort);
    g.send(FrameType::data, id, request);
    f = g.next_not_window();
    REQUIRE(f);
    CHECK(f->type == FrameType::reset);
    CHECK(f->stream == id);
  }
  CHECK(dns_server.queries() == 1);  // echo.test only
}

TEST_CASE("socks: greetings and CONNECT requests are parsed strictly, whole or not at all") {
  auto g = socks::parse_greeting(std::string("\x05\x02\x02\x00rest", 8));
  CHECK(g.verdict == socks::Verdict::ok);
  CHECK(g.length == 4);
  CHECK(g.no_auth);
  CHECK(socks::parse_greeting(std::string("\x05\x01\x02", 3)).no_auth == false);
  CHECK(socks::parse_greeting(std::string("\x05\x02\x00", 3)).verdict == socks::Verdict::need_more);
  CHECK(socks::parse_greeting(std::string("\x05\x00", 2)).verdict == socks::Verdict::bad);
  CHECK(socks::parse_greeting("\x04\x01").verdict == socks::Verdict::bad);  // SOCKS4
  CHECK(socks::parse_greeting("GET / HTTP/1.1").verdict == socks::Verdict::bad);

  auto r = socks::parse_request(std::string("\x05\x01\x00\x03\x08web.test\x01\xbbTLS", 18));
  CHECK(r.verdict == socks::Verdict::ok);
  CHECK(r.command == socks::kConnect);
  CHECK(r.name == "web.test");
  CHECK(r.address.empty());
  CHECK(r.port == 443);
  CHECK(r.length == 15);
  r = socks::parse_request(std::string("\x05\x01\x00\x01\x7f\x00\x00\x02\x00\x50", 10));
  CHECK(r.verdict == socks::Verdict::ok);
  CHECK(r.address == std::string("\x7f\x00\x00\x02", 4));
  CHECK(r.port == 80);
  CHECK(socks::parse_request(std::string("\x05\x01\x00\x03\x08web.te", 11)).verdict == socks::Verdict::need_more);
  CHECK(socks::parse_request(std::string("\x05\x01\x00\x03\x00\x00\x50", 7)).verdict == socks::Verdict::bad);
  CHECK(socks::parse_request(std::string("\x05\x01\x01\x01\x7f\x00\x00\x02\x00\x50", 10)).verdict ==
        socks::Verdict::bad);  // reserved byte set
  CHECK(socks::parse_request(std::string("\x05\x01\x00\x09\x00", 5)).verdict == socks::Verdict::bad);
  CHECK(socks::reply(socks::kNotAllowed) == std::string("\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00", 10));
}

TEST_CASE("net relay: the guest's SOCKS5 port connects allowed names and pinned addresses only") {
  EchoServer echo;
  DnsServer dns_server({{"echo.test", "127.0.0.1"}, {"other.test", "127.0.0.1"}});
  Guest g(dns_server.port());
  uint16_t port = echo.port();
  g.apply({*parse_domain_rules({"echo.test:" + std::to_string(port), "gone.test:" + std::to_string(port)}), {}});
  std::string p{static_cast<char>(port >> 8), static_cast<char>(port & 0xff)};
  const std::string hello("\x05\x01\x00", 3), chosen("\x05\x00", 2);
  // What the relay sends on stream `id` (other streams' frames are skipped).
  auto expect_data = [&](uint32_t id, const std::string& want) {
    std::string got;
    while (got.size() < want.size()) {
      auto f = g.next_not_window();
      REQUIRE(f);
      if (f->stream != id) continue;
      REQUIRE(f->type == FrameType::data);
      got += f->payload;
    }
    CHECK(got == want);
  };
  // By name: the greeting answered, then the request, then the stream.
  g.open(1, "127.0.0.1", net::kSocksPort);
  g.send(FrameType::data, 1, hello);
  expect_data(1, chosen);
  g.send(FrameType::data, 1, std::string("\x05\x01\x00\x03\x09" "echo.test", 14) + p);
  expect_data(1, socks::reply(socks::kSucceeded));
  g.send(FrameType::data, 1, "through socks");
  expect_data(1, "through socks");
  CHECK(dns_server.queries() == 1);
  g.send(FrameType::close, 1);  // the echo server serves one connection at a time

  // By the address just pinned for echo.test (greeting and request at once).
  g.open(3, "127.0.0.1", net::kSocksPort);
  g.send(FrameType::data, 3, hello + std::string("\x05\x01\x00\x01\x7f\x00\x00\x01", 8) + p);
  expect_data(3, chosen + socks::reply(socks::kSucceeded));
  g.send(FrameType::data, 3, "by address");
  expect_data(3, "by address");

  // Refused: a name not allowed (never looked up), a port the entry does not
  // name, an address never resolved, BIND, a client that offers only a
  // password, and bytes that are not SOCKS5.
  struct Refused {
    uint32_t id;
    std::string bytes, answer;
  };
  for (const auto& [id, bytes, answer] : std::vector<Refused>{
           {5, hello + std::string("\x05\x01\x00\x03\x0aother.test", 15) + p, chosen + socks::reply(socks::kNotAllowed)},
           {7, hello + std::string("\x05\x01\x00\x03\x09" "echo.test\x00\x16", 16), chosen + socks::reply(socks::kNotAllowed)},
           {9, hello + std::string("\x05\x01\x00\x01\x7f\x00\x00\x09", 8) + p, chosen + socks::reply(socks::kNotAllowed)},
           // The pinned address on a port its name is not allowed: refused in the reply.
           {17, hello + std::string("\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x16", 10), chosen + socks::reply(socks::kNotAllowed)},
           // An allowed name with no address: unreachable, said in the reply.
           {19, hello + std::string("\x05\x01\x00\x03\x09" "gone.test", 14) + p, chosen + socks::reply(socks::kHostUnreachable)},
           {11, hello + std::string("\x05\x02\x00\x03\x09" "echo.test", 14) + p,
            chosen + socks::reply(socks::kCommandNotSupported)},
           {13, std::string("\x05\x01\x02", 3), std::string("\x05\xff", 2)},
           {15, "CONNECT echo.test:80 HTTP/1.1\r\n\r\n", ""}}) {
    g.open(id, "127.0.0.1", net::kSocksPort);
    g.send(FrameType::data, id, bytes);
    if (!answer.empty()) expect_data(id, answer);
    auto f = g.next_not_window();
    while (f && f->stream != id) f = g.next_not_window();
    REQUIRE(f);
    CHECK_MESSAGE(f->type == FrameType::reset, id);
    CHECK(f->stream == id);
  }
  CHECK(dns_server.queries() == 2);  // echo.test, then gone.test
  auto stats = g.relay->take_stats();
  CHECK(has_denial(stats, "name not allowed"));
  CHECK(has_denial(stats, "address not resolved for an allowed name"));
  CHECK(has_denial(stats, "not a SOCKS5 CONNECT"));
  CHECK(has_denial(stats, "SOCKS5 authentication not offered"));
  CHECK(has_denial(stats, "not a SOCKS5 request"));
}

TEST_CASE("net relay: a Unix-socket port is its owner's alone: a private directory, mode 0600, gone with the VM") {
  DnsServer dns_server({});
  char tmpl[] = "/tmp/sandboxd-expose.XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  ::chmod(dir.c_str(), 01733);
  std::string path;
  {
    Guest g(dns_server.port());
    g.config.expose_dir = dir;
    NetPolicy p{{}, {{8080, 0, true}}};
    p.owner_uid = ::geteuid();
    g.apply(std::move(p));
    REQUIRE(g.relay->exposed().size() == 1);
    CHECK(g.relay->exposed()[0].host == "unix");
    path = g.relay->exposed()[0].url.substr(5);
    struct stat st{};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(st.st_uid == ::geteuid());
    REQUIRE(::lstat((dir + "/" + std::to_string(::geteuid())).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    unique_fd c(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    REQUIRE(::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    auto f = g.next();
    REQUIRE(f);
    CHECK(f->type == FrameType::open);
    CHECK(net::decode_u16(f->payload) == 8080);
  }
  CHECK(::access(path.c_str(), F_OK) != 0);
  // A name planted by someone else is refused, not followed.
  {
    Guest g(dns_server.port());
    g.config.expose_dir = dir;
    std::string planted = dir + "/4242";
    REQUIRE(::symlink("/tmp", planted.c_str()) == 0);
    NetPolicy p{{}, {{8080, 0, true}}};
    p.owner_uid = 4242;
    CHECK(!g.relay->configure(std::move(p), "uid=4242", [](Result<void>) {}).ok());
  }
  std::filesystem::remove_all(dir);
}
