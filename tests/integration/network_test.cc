// Network by policy (SPEC F11-F13) on real VMs, against an "internet" on
// loopback that the test stands up (net_hosts.py: a DNS server that counts
// its queries, HTTPS with a self-signed certificate for the test names,
// HTTP, a TCP echo). Every blocked case aims at one of those test hosts.
// One daemon and one session are shared by the egress cases (a boot each).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <filesystem>
#include <map>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
namespace fs = std::filesystem;

namespace {

// The loopback internet, and a daemon whose resolver and allowed ranges
// point at it.
struct Internet : LoopbackHosts {
  TestDaemon daemon;

  Internet()
      : LoopbackHosts({"web.test=127.0.0.2", "other.test=127.0.0.3", "sub.allowed.test=127.0.0.4",
                       "allowed.test=127.0.0.5", "echo.test=127.0.0.7"}) {
    if (!skip.empty()) return;
    if (!daemon.start({"--network-resolver", "127.0.0.1:" + std::to_string(dns), "--network-allowed-ranges",
                       "127.0.0.0/8", "--pool-python", "1", "--extra-ca-file", dir + "/ca.pem"}))
      skip = "sandboxd did not start: " + daemon.log();
  }
  // The same daemon without the operator's extra CA (started when needed).
  TestDaemon& plain() {
    if (!plain_started) {
      plain_started = plain_daemon.start({"--network-resolver", "127.0.0.1:" + std::to_string(dns),
                                          "--network-allowed-ranges", "127.0.0.0/8", "--pool-python", "0"});
      REQUIRE_MESSAGE(plain_started, plain_daemon.log());
    }
    return plain_daemon;
  }
  TestDaemon plain_daemon;
  bool plain_started = false;
  ~Internet() {
    daemon.stop();
    if (plain_started) plain_daemon.stop();
  }
};

Internet& internet() {
  static Internet* net = [] {
    auto* n = new Internet();
    at_suite_end([n] { delete n; });
    return n;
  }();
  return *net;
}

bool ready() {
  if (!internet().skip.empty()) {
    MESSAGE("SKIPPED: " << internet().skip);
    return false;
  }
  return true;
}

// The egress session: allowed web.test, *.allowed.test and echo.test on its
// port; the test CA in its home.
Session& egress() {
  static std::unique_ptr<Session> s;
  if (!s) {
    SessionOptions o;
    o.net.allowed_domains = {"web.test", "*.allowed.test", "echo.test:" + std::to_string(internet().echo),
                             "web.test:" + std::to_string(internet().https)};
    auto created = Client(internet().daemon.socket()).create_session(o);
    REQUIRE_MESSAGE(created.ok(), created.error().describe());
    s = std::make_unique<Session>(*created);
    REQUIRE(s->write_file("ca.pem", slurp(internet().dir + "/ca.pem")).ok());
    at_suite_end([] {
      (void)s->close();
      s.reset();
    });
  }
  return *s;
}

RunResult exec(Session& s, const std::string& code, int timeout_ms = 60'000) {
  auto r = s.exec(code, {}, std::chrono::milliseconds(timeout_ms));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  INFO("stdout: " << r->stdout_data << "\nstderr: " << r->stderr_data);
  return *r;
}

}  // namespace

TEST_SUITE("network") {

TEST_CASE("network: an allowed name works over HTTPS from Python, curl and Node, and over HTTP") {
  if (!ready()) return;
  auto& s = egress();
  std::string port = std::to_string(internet().https);
  // Python urllib, trusting the test CA; on the entry's own port.
  auto r = exec(s, "import urllib.request, ssl\n"
                   "ctx = ssl.create_default_context(cafile='ca.pem')\n"
                   "print(urllib.request.urlopen('https://web.test:" + port + "/', context=ctx, timeout=20).read().decode())\n");
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data.find("hello from web.test") != std::string::npos);
  CHECK(r.network.connections >= 1);
  CHECK(r.network.bytes_in > 0);
  CHECK(r.network.bytes_out > 0);
  if (!internet().web_ports) {
    MESSAGE("SKIPPED part: ports 443 and 80 on 127.0.0.x could not be served here; the SNI and Host cases need them");
    return;
  }
  r = exec(s, "import subprocess\n"
              "print(subprocess.run(['curl', '-sS', '-m', '20', '--cacert', 'ca.pem', 'https://web.test/'], capture_output=True, text=True).stdout)\n"
              "print(subprocess.run(['curl', '-sS', '-m', '20', 'http://web.test/'], capture_output=True, text=True).stdout)\n"
              "print(subprocess.run(['curl', '-sS', '-m', '20', '--cacert', 'ca.pem', 'https://sub.allowed.test/'], capture_output=True, text=True).stdout)\n"
              "print(subprocess.run(['node', '-e', \"require('https').get('https://web.test/', {ca: require('fs').readFileSync('ca.pem')}, r => r.pipe(process.stdout)).on('error', e => console.log('node error', e.message))\"], capture_output=True, text=True, timeout=50).stdout)\n",
           120'000);
  CHECK(r.stdout_data.find("hello from web.test via 127.0.0.2") != std::string::npos);
  CHECK(r.stdout_data.find("hello from web.test\nvia") == std::string::npos);
  CHECK(r.stdout_data.find("hello from sub.allowed.test via 127.0.0.4") != std::string::npos);
  // curl HTTPS, curl HTTP and Node: three answers from web.test.
  size_t n = 0;
  for (size_t at = 0; (at = r.stdout_data.find("hello from web.test via", at)) != std::string::npos; ++at) ++n;
  CHECK(n == 3);
}

TEST_CASE("network: a sibling, the parent of an allowed subdomain and an unlisted name do not resolve, and never reach the resolver") {
  if (!ready()) return;
  auto r = exec(egress(), "import socket\n"
                          "for name in ['other.test', 'allowed.test', 'www.web.test', 'x.other.test']:\n"
                          "    try:\n"
                          "        print(name, socket.getaddrinfo(name, 443))\n"
                          "    except socket.gaierror as e:\n"
                          "        print(name, 'unresolved')\n");
  for (const char* name : {"other.test", "allowed.test", "www.web.test", "x.other.test"}) {
    CHECK_MESSAGE(r.stdout_data.find(std::string(name) + " unresolved") != std::string::npos, name);
    CHECK_MESSAGE(!internet().queried(name), name);
  }
  bool denied = false;
  for (const auto& d : r.network.denied) denied = denied || (d.host == "other.test" && d.port == 0);
  CHECK(denied);
}

TEST_CASE("network: direct IP, missing SNI, wrong SNI, SNI bound to another address and a wrong Host are refused, on an entry's own port too") {
  if (!ready()) return;
  if (!internet().web_ports) {
    MESSAGE("SKIPPED: ports 443 and 80 on 127.0.0.x could not be served here");
    return;
  }
  // Resolve first, so that web.test's and sub.allowed.test's addresses are pinned.
  auto r = exec(egress(),
                "import socket, ssl\n"
                "socket.getaddrinfo('web.test', 443); socket.getaddrinfo('sub.allowed.test', 443)\n"
                "ctx = ssl.create_default_context(cafile='ca.pem'); ctx.check_hostname = False\n"
                "def tls(addr, sni, port=443):\n"
                "    try:\n"
                "        with socket.create_connection((addr, port), timeout=10) as raw:\n"
                "            with ctx.wrap_socket(raw, server_hostname=sni) as t:\n"
                "                t.sendall(b'GET / HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n'); return 'open ' + t.recv(100).decode()\n"
                "    except Exception as e:\n"
                "        return 'blocked ' + type(e).__name__\n"
                "print('direct-ip', tls('127.0.0.3', 'other.test'))\n"
                "print('no-sni', tls('127.0.0.2', None))\n"
                "print('wrong-sni', tls('127.0.0.2', 'other.test'))\n"
                "print('other-address', tls('127.0.0.2', 'sub.allowed.test'))\n"
                "print('right', tls('127.0.0.2', 'web.test'))\n"
                "print('entry-port-wrong-sni', tls('127.0.0.2', 'other.test', " + std::to_string(internet().https) + "))\n"
                "print('entry-port-no-sni', tls('127.0.0.2', None, " + std::to_string(internet().https) + "))\n"
                "print('entry-port-right', tls('127.0.0.2', 'web.test', " + std::to_string(internet().https) + "))\n"
                "def http(host):\n"
                "    try:\n"
                "        with socket.create_connection(('127.0.0.2', 80), timeout=10) as s:\n"
                "            s.sendall(('GET / HTTP/1.1\\r\\nHost: ' + host + '\\r\\nConnection: close\\r\\n\\r\\n').encode())\n"
                "            data = s.recv(100)\n"
                "            return 'open' if data else 'blocked EOF'\n"
                "    except Exception as e:\n"
                "        return 'blocked ' + type(e).__name__\n"
                "print('host-other', http('other.test'))\n"
                "print('host-right', http('web.test'))\n");
  for (const char* c : {"direct-ip blocked", "no-sni blocked", "wrong-sni blocked", "other-address blocked",
                        "host-other blocked", "right open", "host-right open", "entry-port-wrong-sni blocked",
                        "entry-port-no-sni blocked", "entry-port-right open"})
    CHECK_MESSAGE(r.stdout_data.find(c) != std::string::npos, std::string(c) << " in: " << r.stdout_data);
  std::string reasons;
  for (const auto& d : r.network.denied) reasons += d.reason + ";";
  CHECK(reasons.find("address not resolved for an allowed name") != std::string::npos);
  CHECK(reasons.find("TLS without SNI") != std::string::npos);
  CHECK(reasons.find("name not bound to this address") != std::string::npos);
}

TEST_CASE("network: outside resolvers over UDP, TCP and 853 are unreachable; a raw TCP connection to an allowed name works") {
  if (!ready()) return;
  size_t before = internet().dns_queries().size();
  std::string dns = std::to_string(internet().dns), echo = std::to_string(internet().echo);
  auto r = exec(egress(),
                "import socket, struct\n"
                "q = struct.pack('>HHHHHH', 7, 0x100, 1, 0, 0, 0) + b'\\x05leak1\\x04test\\x00' + struct.pack('>HH', 1, 1)\n"
                "for addr, port in [('127.0.0.1', " + dns + "), ('127.0.0.2', 53), ('127.0.0.3', 53)]:\n"
                "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
                "    try:\n"
                "        s.sendto(q, (addr, port)); s.recv(512); print('udp', addr, 'answered')\n"
                "    except Exception as e:\n"
                "        print('udp', addr, 'blocked')\n"
                "for addr, port in [('127.0.0.2', 53), ('127.0.0.2', 853), ('127.0.0.3', 853)]:\n"
                "    try:\n"
                "        c = socket.create_connection((addr, port), timeout=5)\n"
                "        c.sendall(struct.pack('>H', len(q)) + q); print('tcp', port, 'answered' if c.recv(512) else 'blocked')\n"
                "    except Exception as e:\n"
                "        print('tcp', port, 'blocked')\n"
                "c = socket.create_connection(('echo.test', " + echo + "), timeout=10); c.sendall(b'ping'); print('echo', c.recv(10))\n");
  CHECK(r.stdout_data.find("answered") == std::string::npos);
  CHECK(r.stdout_data.find("echo b'ping'") != std::string::npos);
  CHECK(!internet().queried("leak1.test"));
  // Only echo.test was looked up (the guest's getaddrinfo).
  for (size_t i = before; i < internet().dns_queries().size(); ++i) CHECK(internet().dns_queries()[i] == "echo.test");
}

TEST_CASE("network: ports are exposed with egress off, for servers on 127.0.0.1, ::1 and any address") {
  if (!ready()) return;
  SessionOptions o;
  o.net.expose_ports = {{8001, 0}, {8002, 0}, {8003, 0}, {8004, 0}, {8005, 0, true}};
  auto created = Client(internet().daemon.socket()).create_session(o);
  REQUIRE_MESSAGE(created.ok(), created.error().describe());
  Session s = *created;
  REQUIRE(s.info().exposed_ports.size() == 5);
  std::map<uint32_t, std::string> url;
  for (const auto& p : s.info().exposed_ports) {
    url[p.internal] = p.url;
    if (p.internal == 8005) continue;
    CHECK(p.host == "127.0.0.1");
    CHECK(p.external >= 1024);
  }
  // The Unix-socket form: the caller's own, mode 0600.
  REQUIRE(url[8005].starts_with("unix:"));
  std::string sock = url[8005].substr(5);
  struct stat st{};
  REQUIRE(::lstat(sock.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_uid == ::geteuid());
  auto r = exec(s, "import http.server, socket, threading\n"
                   "class V6(http.server.ThreadingHTTPServer): address_family = socket.AF_INET6\n"
                   "for cls, addr, port in [(http.server.ThreadingHTTPServer, '127.0.0.1', 8001), (V6, '::1', 8002),\n"
                   "                        (http.server.ThreadingHTTPServer, '0.0.0.0', 8003),\n"
                   "                        (http.server.ThreadingHTTPServer, '127.0.0.1', 8005)]:\n"
                   "    srv = cls((addr, port), http.server.SimpleHTTPRequestHandler)\n"
                   "    threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
                   "try:\n"
                   "    socket.getaddrinfo('web.test', 443); print('resolved')\n"
                   "except socket.gaierror:\n"
                   "    print('no dns')\n"
                   "try:\n"
                   "    socket.create_connection(('127.0.0.2', 443), timeout=5); print('connected')\n"
                   "except OSError:\n"
                   "    print('no route')\n");
  CHECK(r.stdout_data == "no dns\nno route\n");
  for (uint32_t port : {8001u, 8002u, 8003u}) {
    auto c = run_command({"curl", "-s", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", url[port] + "/"});
    CHECK_MESSAGE(c.out == "200", port);
  }
  auto u = run_command({"curl", "-s", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock,
                        "http://localhost/"});
  CHECK(u.out == "200");
  // Nothing listens on 8004: closed at once (curl sees an empty reply), and counted.
  auto c = run_command({"curl", "-s", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", url[8004] + "/"});
  CHECK(c.out == "000");
  CHECK(c.exit_code != 28);  // not a timeout
  auto list = Client(internet().daemon.socket()).sessions();
  REQUIRE(list.ok());
  bool listed = false;
  for (const auto& i : *list)
    if (i.id == s.id()) listed = i.exposed_ports.size() == 5;
  CHECK(listed);
  r = exec(s, "print(1)");
  bool refused = false;
  for (const auto& d : r.network.denied) refused = refused || (d.port == 8004);
  CHECK(refused);
  (void)s.close();
}

TEST_CASE("network: a live session's allowlist is widened, then closed, with open connections reset") {
  if (!ready()) return;
  std::string echo = std::to_string(internet().echo);
  SessionOptions o;
  auto created = Client(internet().daemon.socket()).create_session(o);
  REQUIRE_MESSAGE(created.ok(), created.error().describe());
  Session s = *created;
  std::string probe = "import socket\n"
                      "try:\n"
                      "    c = socket.create_connection(('echo.test', " + echo + "), timeout=10); c.sendall(b'hi'); print('echo', c.recv(10))\n"
                      "except OSError as e:\n"
                      "    print('blocked')\n";
  CHECK(exec(s, probe).stdout_data == "blocked\n");
  auto info = s.set_network({"echo.test:" + echo});
  REQUIRE_MESSAGE(info.ok(), info.error().describe());
  CHECK(info->allowed_domains == std::vector<std::string>{"echo.test:" + echo});
  CHECK(exec(s, probe).stdout_data == "echo b'hi'\n");
  CHECK(exec(s, "import os\nprint(os.environ.get('https_proxy'))\n").stdout_data == "http://127.0.0.1:3128\n");
  // A connection left open across the change is reset by it.
  CHECK(exec(s, "import socket\nkeep = socket.create_connection(('echo.test', " + echo + "), timeout=10)\n"
                "keep.sendall(b'a'); print(keep.recv(10))\n").stdout_data == "b'a'\n");
  auto cli = run_command({SANDBOXCTL_BIN, "--socket", internet().daemon.socket(), "session", "network", s.id(), "--off"});
  CHECK(cli.exit_code == 0);
  auto r = exec(s, "try:\n"
                   "    keep.sendall(b'b'); print('after', keep.recv(10))\n"
                   "except OSError as e:\n"
                   "    print('reset')\n");
  CHECK((r.stdout_data == "reset\n" || r.stdout_data == "after b''\n"));
  CHECK(exec(s, probe).stdout_data == "blocked\n");
  // The proxy variables came with egress and went with it.
  CHECK(exec(s, "import os\nprint(sorted(k for k in os.environ if k.lower().endswith('_proxy')))\n").stdout_data ==
        "[]\n");
  (void)s.close();
}

TEST_CASE("network: the guest's HTTP and SOCKS5 proxies tunnel to allowed names only, checked like a direct connection") {
  if (!ready()) return;
  // The proxy variables are set for user code while egress is on.
  auto r = exec(egress(), "import os\nprint([os.environ.get(k) for k in ('https_proxy', 'HTTP_PROXY', 'ALL_PROXY', 'no_proxy')])\n");
  CHECK(r.stdout_data ==
        "['http://127.0.0.1:3128', 'http://127.0.0.1:3128', 'socks5h://127.0.0.1:1080', 'localhost,127.0.0.1,::1']\n");
  if (!internet().web_ports) {
    MESSAGE("SKIPPED: ports 443 and 80 on 127.0.0.x could not be served here");
    return;
  }
  r = exec(egress(),
           "import subprocess\n"
           "def curl(proxy, *args):\n"
           "    p = subprocess.run(['curl', '-sS', '-m', '20', '--cacert', 'ca.pem', *(['-x', proxy] if proxy else []), *args], capture_output=True, text=True)\n"
           "    return p.stdout.strip() or 'failed %d' % p.returncode\n"
           "for proxy in ('http://127.0.0.1:3128', 'socks5h://127.0.0.1:1080', 'socks5://127.0.0.1:1080', None):\n"
           "    print(proxy, 'https', curl(proxy, 'https://web.test/'))\n"
           "    print(proxy, 'http', curl(proxy, 'http://web.test/'))\n"
           "    print(proxy, 'other', curl(proxy, 'https://other.test/'))\n"
           "    print(proxy, 'parent', curl(proxy, 'https://allowed.test/'))\n",
           240'000);
  // None: curl's own choice from the variables (the HTTP proxy).
  for (std::string proxy : {"http://127.0.0.1:3128", "socks5h://127.0.0.1:1080", "socks5://127.0.0.1:1080", "None"}) {
    CHECK_MESSAGE(r.stdout_data.find(proxy + " https hello from web.test via 127.0.0.2") != std::string::npos, proxy);
    CHECK_MESSAGE(r.stdout_data.find(proxy + " http hello from web.test via 127.0.0.2") != std::string::npos, proxy);
    CHECK_MESSAGE(r.stdout_data.find(proxy + " other failed") != std::string::npos, proxy);
    CHECK_MESSAGE(r.stdout_data.find(proxy + " parent failed") != std::string::npos, proxy);
  }
  CHECK(!internet().queried("other.test"));
  CHECK(!internet().queried("allowed.test"));
}

TEST_CASE("network: the operator's extra CA is trusted by Python, curl and Node; without it their TLS fails") {
  if (!ready()) return;
  if (!internet().web_ports) {
    MESSAGE("SKIPPED: ports 443 and 80 on 127.0.0.x could not be served here");
    return;
  }
  // No CA given by the code: each client's default store decides.
  const std::string code =
      "import subprocess, urllib.request\n"
      "try:\n"
      "    print('python', urllib.request.urlopen('https://web.test/', timeout=20).read().decode().strip())\n"
      "except Exception as e:\n"
      "    print('python failed', type(e).__name__)\n"
      "p = subprocess.run(['curl', '-sS', '-m', '20', 'https://web.test/'], capture_output=True, text=True)\n"
      "print('curl', p.stdout.strip() or 'failed %d' % p.returncode)\n"
      "p = subprocess.run(['node', '-e', \"require('https').get('https://web.test/', r => r.pipe(process.stdout))"
      ".on('error', e => console.log('failed', e.code))\"], capture_output=True, text=True, timeout=50)\n"
      "print('node', p.stdout.strip())\n";
  auto r = exec(egress(), code, 120'000);
  for (const char* client : {"python", "curl", "node"})
    CHECK_MESSAGE(r.stdout_data.find(std::string(client) + " hello from web.test via 127.0.0.2") != std::string::npos,
                  client);
  RunRequest req = make_request(Language::python, code);
  req.net.allowed_domains = {"web.test"};
  req.timeout = std::chrono::milliseconds(120'000);
  auto plain = Client(internet().plain().socket()).run(req);
  REQUIRE_MESSAGE(plain.ok(), plain.error().describe());
  INFO("stdout: " << plain->stdout_data << "\nstderr: " << plain->stderr_data);
  CHECK(plain->stdout_data.find("python failed") != std::string::npos);
  CHECK(plain->stdout_data.find("curl failed") != std::string::npos);
  CHECK(plain->stdout_data.find("node failed") != std::string::npos);
  CHECK(plain->stdout_data.find("hello") == std::string::npos);
}

TEST_CASE("network: sandboxctl run --expose prints the URL before the code starts, and --json lists the mapping") {
  if (!ready()) return;
  auto r = run_command({SANDBOXCTL_BIN, "--socket", internet().daemon.socket(), "run", "--json", "--expose", "8080",
                        "-l", "raw", "echo up"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("\"exposed_ports\":[{\"internal\":8080,\"external\":") != std::string::npos);
  CHECK(r.out.find("\"url\":\"http://127.0.0.1:") != std::string::npos);
  r = run_command({SANDBOXCTL_BIN, "--socket", internet().daemon.socket(), "run", "--expose", "8080", "-l", "raw",
                   "echo up"});
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("sandboxctl: guest port 8080 at http://127.0.0.1:") != std::string::npos);
}

TEST_CASE("network: a warm VM that served a run with network is gone; the next pool VM has none") {
  if (!ready()) return;
  Client client(internet().daemon.socket());
  RunRequest req = make_request(Language::python, "import socket\nprint(socket.getaddrinfo('echo.test', 1)[0][4][0])\n");
  req.net.allowed_domains = {"echo.test"};
  auto r = client.run(req);
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "127.0.0.7\n");
  // The pool refills with a fresh VM; wait for it, then run without network.
  for (int i = 0; i < 120; ++i) {
    auto st = client.status();
    if (st.ok() && !st->pool.empty() && st->pool[0].ready > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  req = make_request(Language::python, "import os, socket\n"
                                       "print(os.environ.get('https_proxy'))\n"
                                       "try:\n"
                                       "    socket.getaddrinfo('echo.test', 1); print('resolved')\n"
                                       "except socket.gaierror:\n"
                                       "    print('no dns')\n"
                                       "try:\n"
                                       "    socket.create_connection(('127.0.0.7', " + std::to_string(internet().echo) +
                                           "), timeout=5); print('connected')\n"
                                       "except OSError:\n"
                                       "    print('no route')\n");
  r = client.run(req);
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->warm_pool_hit);
  CHECK(r->stdout_data == "None\nno dns\nno route\n");
}

TEST_CASE("network: bad allowlists and --network without a default list are invalid_argument") {
  if (!ready()) return;
  Client client(internet().daemon.socket());
  for (std::vector<std::string> bad : {std::vector<std::string>{"127.0.0.2"}, {"a..test"}, {"*.test"}, {"[::1]:443"}}) {
    RunRequest req = make_request(Language::python, "print(1)");
    req.net.allowed_domains = bad;
    auto r = client.run(req);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::invalid_argument);
  }
  RunRequest req = make_request(Language::python, "print(1)");
  req.net.network = true;
  auto r = client.run(req);
  REQUIRE(!r.ok());
  CHECK(r.error().code == ErrorCode::invalid_argument);
  CHECK(r.error().message.find("default_allowed_domains") != std::string::npos);
  auto cli = run_command({SANDBOXCTL_BIN, "--socket", internet().daemon.socket(), "run", "--expose", "80:80", "print(1)"});
  CHECK(cli.exit_code == 2);
}

}  // TEST_SUITE
