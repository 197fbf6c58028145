// sandbox-router: one HTTP address for many sandboxd nodes (each with its
// own sandbox-gateway), found through DNS SRV records or a static list.
#include <getopt.h>
#include <signal.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "gateway/http_server.h"
#include "gateway/router.h"

namespace {

const char* kUsage =
    "usage: sandbox-router (--srv NAME --dns IP:PORT | --node HOST:PORT...) [OPTIONS]\n"
    "\n"
    "Routing gateway in front of many sandbox-gateway nodes: the same HTTP API\n"
    "(POST /execute, /v1/runs, /v1/sessions...), each run or session placed on a\n"
    "ready node; GET /health and /metrics describe the router and its nodes.\n"
    "Callers' bearer tokens are passed to the nodes, which check them.\n"
    "\n"
    "  --listen HOST:PORT        address to serve (default 127.0.0.1:8080; port 0 picks one)\n"
    "  --node HOST:PORT          a node gateway (repeatable; with or without --srv)\n"
    "  --srv NAME                DNS SRV name listing node gateways (e.g.\n"
    "                            sandbox-gateway.service.consul, or\n"
    "                            _http._tcp.sandbox-gateway.sandboxd.svc.cluster.local)\n"
    "  --dns IP:PORT             DNS server asked for --srv (IPv4 or [IPv6])\n"
    "  --health-interval MS      readiness polls of each node (default 1000)\n"
    "  --health-timeout MS       a poll's and a DNS query's bound (default 1000)\n"
    "  --discovery-interval MS   SRV look-ups (default 5000)\n"
    "  --load-factor F           a key's node takes work up to F x the mean load (default 1.25)\n"
    "  --threads N               requests served at once (default 64)\n"
    "  --max-body BYTES          JSON request bodies (default 2097152; 413 past it)\n"
    "  --max-upload BYTES        session file uploads (default 52428800)\n"
    "  --base-url URL            prefix of rewritten download links (default http://HOST:PORT)\n"
    "  --metrics-public          serve /metrics to any address, not only loopback\n"
    "  -h, --help\n";

bool number(const char* s, uint64_t* out) {
  std::string_view v(s);
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
  return ec == std::errc() && end == v.data() + v.size();
}

bool address(const std::string& v) {
  auto colon = v.rfind(':');
  uint64_t n = 0;
  return colon != std::string::npos && colon > 0 && number(v.c_str() + colon + 1, &n) && n > 0 && n <= 65535;
}

}  // namespace

int main(int argc, char** argv) {
  sandbox::gateway::RouterOptions o;
  enum { kListen = 256, kNode, kSrv, kDns, kHealthInterval, kHealthTimeout, kDiscovery, kLoadFactor, kThreads,
         kMaxBody, kMaxUpload, kBaseUrl, kMetricsPublic };
  static const option kOptions[] = {
      {"listen", required_argument, nullptr, kListen},
      {"node", required_argument, nullptr, kNode},
      {"srv", required_argument, nullptr, kSrv},
      {"dns", required_argument, nullptr, kDns},
      {"health-interval", required_argument, nullptr, kHealthInterval},
      {"health-timeout", required_argument, nullptr, kHealthTimeout},
      {"discovery-interval", required_argument, nullptr, kDiscovery},
      {"load-factor", required_argument, nullptr, kLoadFactor},
      {"threads", required_argument, nullptr, kThreads},
      {"max-body", required_argument, nullptr, kMaxBody},
      {"max-upload", required_argument, nullptr, kMaxUpload},
      {"base-url", required_argument, nullptr, kBaseUrl},
      {"metrics-public", no_argument, nullptr, kMetricsPublic},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  auto bad = [](const char* what) {
    std::fprintf(stderr, "sandbox-router: %s\n%s", what, kUsage);
    return 2;
  };
  int c;
  uint64_t n = 0;
  while ((c = getopt_long(argc, argv, "h", kOptions, nullptr)) != -1) {
    switch (c) {
      case 'h': std::fputs(kUsage, stdout); return 0;
      case kListen:
        if (!sandbox::gateway::parse_listen(optarg, &o.host, &o.port)) return bad("--listen takes HOST:PORT");
        break;
      case kNode:
        if (!address(optarg)) return bad("--node takes HOST:PORT");
        o.static_nodes.emplace_back(optarg);
        break;
      case kSrv: o.srv_name = optarg; break;
      case kDns:
        if (!address(optarg)) return bad("--dns takes IP:PORT");
        o.dns_server = optarg;
        break;
      case kBaseUrl: o.base_url = optarg; break;
      case kMetricsPublic: o.metrics_public = true; break;
      case kLoadFactor: {
        char* end = nullptr;
        double f = std::strtod(optarg, &end);
        if (!end || *end || !(f >= 1.0 && f <= 100.0)) return bad("--load-factor is 1 to 100");
        o.load_factor = f;
        break;
      }
      default: {
        if (!optarg || !number(optarg, &n)) return bad("a numeric option needs a non-negative integer");
        switch (c) {
          case kHealthInterval: if (n < 100 || n > 600'000) return bad("--health-interval is 100 to 600000"); o.health_interval = std::chrono::milliseconds(n); break;
          case kHealthTimeout: if (n < 10 || n > 60'000) return bad("--health-timeout is 10 to 60000"); o.health_timeout = std::chrono::milliseconds(n); break;
          case kDiscovery: if (n < 100 || n > 3'600'000) return bad("--discovery-interval is 100 to 3600000"); o.discovery_interval = std::chrono::milliseconds(n); break;
          case kThreads: if (n == 0 || n > 1024) return bad("--threads is 1 to 1024"); o.threads = n; break;
          case kMaxBody: o.max_body = n; break;
          case kMaxUpload: o.max_upload = n; o.max_reply = std::max(o.max_reply, n + (1 << 20)); break;
          default: return bad("unknown option");
        }
      }
    }
  }
  if (optind != argc) return bad("unexpected argument");
  if (o.srv_name.empty() && o.static_nodes.empty()) return bad("name the nodes: --srv NAME --dns IP:PORT, or --node HOST:PORT");
  if (!o.srv_name.empty() && o.dns_server.empty()) return bad("--srv needs --dns IP:PORT");
  // A client or node that goes away mid-response must not kill the process.
  ::signal(SIGPIPE, SIG_IGN);
  return sandbox::gateway::serve_router(std::move(o));
}
