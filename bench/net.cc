#include "bench/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "bench/harness.h"
#include "common/io.h"
#include "daemon/dns_message.h"
#include "daemon/net_ranges.h"

namespace sandbox::bench {
namespace {

// The server both sides talk to, on 127.0.0.1: after a one-byte request it
// answers 'k' for "k" (a round trip) and `bytes` of data for "d".
class Server {
 public:
  explicit Server(size_t bytes) : bytes_(bytes) {
    tcp_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    dns_.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(tcp_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(tcp_.get(), 64);
    ::bind(dns_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(tcp_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    ::getsockname(dns_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    dns_port = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~Server() {
    stop_ = true;
    thread_.join();
  }
  uint16_t port = 0, dns_port = 0;

 private:
  void serve() {
    std::string chunk(1 << 20, 'x');
    while (!stop_) {
      pollfd p[2] = {{tcp_.get(), POLLIN, 0}, {dns_.get(), POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      if (p[1].revents) {
        char buf[512];
        sockaddr_in from{};
        socklen_t len = sizeof from;
        ssize_t n = ::recvfrom(dns_.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (auto q = n > 0 ? daemon::dns::parse_query({buf, static_cast<size_t>(n)}) : std::nullopt) {
          auto a = q->name == "bench.test" ? daemon::dns::build_answer(*q, 0, {*daemon::parse_address("127.0.0.1")})
                                           : daemon::dns::build_answer(*q, 3);
          ::sendto(dns_.get(), a.data(), a.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
        }
      }
      if (!p[0].revents) continue;
      unique_fd c(::accept4(tcp_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      // One client at a time is all either side does.
      std::thread([fd = std::move(c), this, &chunk]() mutable {
        char req;
        while (::read(fd.get(), &req, 1) == 1) {
          if (req == 'k') {
            (void)write_all(fd.get(), "k");
          } else if (req == 'd') {
            for (size_t sent = 0; sent < bytes_; sent += chunk.size())
              if (!write_all(fd.get(), std::string_view(chunk).substr(0, std::min(chunk.size(), bytes_ - sent)))) return;
          }
        }
      }).detach();
    }
  }
  size_t bytes_;
  unique_fd tcp_, dns_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

// The measuring program, the same on both sides: connect latency (connect,
// one round trip, close), then one download. Prints "connect MS..." and
// "download SECONDS".
std::string program(const std::string& host, uint16_t port, int samples, size_t bytes) {
  std::ostringstream p;
  p << "import socket, time\n"
    << "lat = []\n"
    << "for i in range(" << samples << "):\n"
    << "    t = time.perf_counter(); s = socket.create_connection(('" << host << "', " << port << "))\n"
    << "    s.sendall(b'k'); s.recv(1); s.close(); lat.append((time.perf_counter() - t) * 1000)\n"
    << "print('connect', ' '.join('%.3f' % x for x in lat))\n"
    << "s = socket.create_connection(('" << host << "', " << port << ")); s.sendall(b'd'); got = 0\n"
    << "t = time.perf_counter()\n"
    << "while got < " << bytes << ":\n"
    << "    b = s.recv(1 << 20)\n"
    << "    if not b: break\n"
    << "    got += len(b)\n"
    << "print('download', time.perf_counter() - t, got)\n";
  return p.str();
}

struct Figures {
  Stats connect;
  double seconds = 0;
  size_t bytes = 0;
};

bool parse(const std::string& out, Figures* f) {
  std::istringstream in(out);
  std::string word;
  bool ok = false;
  while (in >> word) {
    if (word == "connect") {
      std::string line;
      std::getline(in, line);
      std::istringstream l(line);
      double v;
      while (l >> v) f->connect.v.push_back(v);
    } else if (word == "download") {
      in >> f->seconds >> f->bytes;
      ok = true;
    }
  }
  return ok;
}

}  // namespace

int run_network(const NetOptions& o) {
  size_t bytes = static_cast<size_t>(o.megabytes) << 20;
  Server server(bytes);
  Daemon daemon(o.bin_dir, o.images,
                {"--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0", "--snapshots", "off",
                 "--network-resolver", "127.0.0.1:" + std::to_string(server.dns_port), "--network-allowed-ranges",
                 "127.0.0.0/8"});
  std::string code = program("bench.test", server.port, o.samples, bytes);

  Figures host, guest;
  // The host side: the same program, its output read through a pipe.
  std::string tmp = "/tmp/sandbox-bench-net.py";
  {
    std::ofstream f(tmp);
    f << program("127.0.0.1", server.port, o.samples, bytes);
  }
  FILE* pipe = ::popen(("/usr/bin/python3 " + tmp).c_str(), "r");
  std::string out;
  char buf[4096];
  while (pipe && std::fgets(buf, sizeof buf, pipe)) out += buf;
  if (pipe) ::pclose(pipe);
  fs::remove(tmp);
  bool host_ok = parse(out, &host);

  SessionOptions so;
  so.net.allowed_domains = {"bench.test:" + std::to_string(server.port)};
  auto session = daemon.client().create_session(so);
  bool guest_ok = false;
  if (session) {
    auto r = session->exec(code, {}, std::chrono::milliseconds(300'000));
    if (r && r->exit_code == 0) guest_ok = parse(r->stdout_data, &guest);
    else std::fprintf(stderr, "sandbox-bench: guest side failed: %s\n",
                      r ? r->stderr_data.c_str() : r.error().describe().c_str());
    (void)session->close();
  } else {
    std::fprintf(stderr, "sandbox-bench: %s\n", session.error().describe().c_str());
  }

  std::printf("%-52s %12s %12s %12s\n", "one TCP connection (connect + round trip)", "p50", "p95", "p99");
  auto row = [](const char* name, const Stats& s) {
    if (s.v.empty()) return (void)std::printf("%-52s %12s\n", name, "n/a");
    std::printf("%-52s %12s %12s %12s\n", name, fmt(s.median()).c_str(), fmt(s.pct(95)).c_str(), fmt(s.pct(99)).c_str());
  };
  row("through the policy path (guest -> daemon -> server)", guest.connect);
  row("host directly", host.connect);
  auto rate = [](const Figures& f) { return f.seconds > 0 ? static_cast<double>(f.bytes) / 1048576.0 / f.seconds : 0.0; };
  std::string title = "one download of " + std::to_string(o.megabytes) + " MB";
  std::printf("\n%-52s %12s %12s\n", title.c_str(), "MB/s", "seconds");
  if (guest_ok) std::printf("%-52s %12.1f %12.2f\n", "through the policy path", rate(guest), guest.seconds);
  if (host_ok) std::printf("%-52s %12.1f %12.2f\n", "host directly", rate(host), host.seconds);
  return guest_ok && host_ok ? 0 : 1;
}

}  // namespace sandbox::bench
