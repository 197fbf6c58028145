// sandbox-gateway: an HTTP front of sandboxd for callers that cannot reach
// its Unix socket. A plain client of the daemon (libsandbox), unprivileged;
// TLS is left to a reverse proxy in front of it.
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "gateway/http_server.h"
#include "gateway/gateway.h"

namespace {

const char* kUsage =
    "usage: sandbox-gateway --tokens FILE [OPTIONS]\n"
    "\n"
    "HTTP gateway to sandboxd: POST /execute (python-sandbox's request and\n"
    "response), GET /health, GET /metrics, /v1/runs (NDJSON streaming with\n"
    "\"stream\": true), /v1/sessions, /openapi.json.\n"
    "\n"
    "  --listen HOST:PORT     address to serve (default 127.0.0.1:8000; port 0 picks one)\n"
    "  --tokens FILE          bearer tokens, one 'TOKEN NAME [MAX_CONCURRENT]' per line\n"
    "  --socket PATH          sandboxd's socket (default $SANDBOXD_SOCKET, else\n"
    "                         /run/sandboxd/sandboxd.sock)\n"
    "  --max-body BYTES       JSON request bodies (default 2097152; 413 past it)\n"
    "  --max-upload BYTES     session file uploads (default 52428800)\n"
    "  --threads N            requests served at once (default 32; more wait)\n"
    "  --file-ttl SECONDS     life of /execute's download links (default 600)\n"
    "  --max-files N          files returned from /tmp/output per run (default 20)\n"
    "  --max-file-bytes N     each (default 10485760)\n"
    "  --max-files-bytes N    all of one run (default 52428800)\n"
    "  --store-bytes N        files held for download at once (default 536870912)\n"
    "  --timeout SECONDS      a run's timeout when the request names none (default 30)\n"
    "  --base-url URL         prefix of download links (default http://HOST:PORT)\n"
    "  --metrics-public       serve /metrics to any address, not only loopback\n"
    "  -h, --help\n";

bool number(const char* s, uint64_t* out) {
  std::string_view v(s);
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
  return ec == std::errc() && end == v.data() + v.size();
}

}  // namespace

int main(int argc, char** argv) {
  using sandbox::gateway::Options;
  Options o;
  if (const char* s = std::getenv("SANDBOXD_SOCKET"); s && *s) o.socket = s;
  else o.socket = "/run/sandboxd/sandboxd.sock";
  enum { kListen = 256, kTokens, kSocket, kMaxBody, kMaxUpload, kThreads, kTtl, kMaxFiles, kMaxFileBytes,
         kMaxFilesBytes, kStoreBytes, kTimeout, kBaseUrl, kMetricsPublic };
  static const option kOptions[] = {
      {"listen", required_argument, nullptr, kListen},         {"tokens", required_argument, nullptr, kTokens},
      {"socket", required_argument, nullptr, kSocket},         {"max-body", required_argument, nullptr, kMaxBody},
      {"max-upload", required_argument, nullptr, kMaxUpload},  {"threads", required_argument, nullptr, kThreads},
      {"file-ttl", required_argument, nullptr, kTtl},          {"max-files", required_argument, nullptr, kMaxFiles},
      {"max-file-bytes", required_argument, nullptr, kMaxFileBytes},
      {"max-files-bytes", required_argument, nullptr, kMaxFilesBytes},
      {"store-bytes", required_argument, nullptr, kStoreBytes}, {"timeout", required_argument, nullptr, kTimeout},
      {"base-url", required_argument, nullptr, kBaseUrl},      {"metrics-public", no_argument, nullptr, kMetricsPublic},
      {"help", no_argument, nullptr, 'h'},                     {nullptr, 0, nullptr, 0},
  };
  auto bad = [](const char* what) {
    std::fprintf(stderr, "sandbox-gateway: %s\n%s", what, kUsage);
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
      case kTokens: o.tokens_file = optarg; break;
      case kSocket: o.socket = optarg; break;
      case kBaseUrl: o.base_url = optarg; break;
      case kMetricsPublic: o.metrics_public = true; break;
      default: {
        if (!optarg || !number(optarg, &n)) return bad("a numeric option needs a non-negative integer");
        switch (c) {
          case kMaxBody: o.max_body = n; break;
          case kMaxUpload: o.max_upload = n; break;
          case kThreads: if (n == 0 || n > 1024) return bad("--threads is 1 to 1024"); o.threads = n; break;
          case kTtl: if (n == 0) return bad("--file-ttl is at least 1"); o.file_ttl = std::chrono::seconds(n); break;
          case kMaxFiles: o.max_files = n; break;
          case kMaxFileBytes: o.max_file_bytes = n; break;
          case kMaxFilesBytes: o.max_files_bytes = n; break;
          case kStoreBytes: o.store_bytes = n; break;
          case kTimeout: if (n == 0 || n > 300) return bad("--timeout is 1 to 300"); o.default_timeout = std::chrono::seconds(n); break;
          default: return bad("unknown option");
        }
      }
    }
  }
  if (optind != argc) return bad("unexpected argument");
  if (o.tokens_file.empty()) return bad("--tokens FILE is required: no token, no run");
  auto tokens = sandbox::gateway::Tokens::load(o.tokens_file);
  if (!tokens) {
    std::fprintf(stderr, "sandbox-gateway: %s\n", tokens.error().describe().c_str());
    return 1;
  }
  // Tokens others can read are tokens others can use.
  if (struct stat st{}; ::stat(o.tokens_file.c_str(), &st) == 0 && (st.st_mode & 0077))
    std::fprintf(stderr, "sandbox-gateway: warning: %s is readable by group or others (chmod 600)\n",
                 o.tokens_file.c_str());
  // A client that goes away mid-response must not kill the process.
  ::signal(SIGPIPE, SIG_IGN);
  std::fprintf(stderr, "sandbox-gateway: %zu tokens from %s; daemon at %s\n", tokens->size(), o.tokens_file.c_str(),
               o.socket.c_str());
  return sandbox::gateway::serve(std::move(o), std::move(*tokens));
}
