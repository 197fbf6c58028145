// What sandboxctl's verbs share: global options, exit statuses, output.
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <sandbox/json.h>

#include "ctl/verbs.h"

namespace sandbox::ctl {
namespace {

bool stderr_at_line_start = true;

}  // namespace

bool parse_global(int argc, char** argv, int* i, Globals* g) {
  std::string_view a = argv[*i];
  if (a == "--json") return g->json = true;
  if (a == "-q" || a == "--quiet") return g->quiet = true;
  if (a.starts_with("--socket=")) {
    g->socket = std::string(a.substr(9));
    return true;
  }
  if (a == "--socket" && *i + 1 < argc) {
    g->socket = argv[++*i];
    return true;
  }
  return false;
}

std::string socket_path(const Globals& g) {
  if (!g.socket.empty()) return g.socket;
  const char* env = std::getenv("SANDBOXD_SOCKET");
  return env && *env ? env : kDefaultSocketPath;
}

int exit_status(const Result<RunResult>& r) {
  if (!r) return r.error().code == ErrorCode::invalid_argument ? kExitUsage : kExitSandboxError;
  if (r->timed_out) return kExitTimeout;
  return r->exit_code & 0xff;
}

void write_fd(int fd, std::string_view data) {
  if (fd == 2 && !data.empty()) stderr_at_line_start = data.back() == '\n';
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

void notice(std::string_view text) {
  write_fd(2, std::string(stderr_at_line_start ? "" : "\n") + "sandboxctl: " + std::string(text) + "\n");
}

int fail(const Error& e, std::string_view prefix) {
  notice(std::string(prefix) + std::string(error_code_name(e.code)) + ": " + e.message);
  return e.code == ErrorCode::invalid_argument ? kExitUsage : kExitSandboxError;
}

std::string run_json(std::string_view source, std::optional<Language> language, const Result<RunResult>& r,
                     const std::optional<Error>& extra) {
  std::string j = "{\"source\":" + json_string(source);
  if (r) {
    auto fields = to_json(*r);
    j += "," + fields.substr(1, fields.size() - 2);
    if (extra) j += ",\"error\":" + to_json(*extra);
  } else {
    if (language) j += ",\"language\":" + json_string(language_name(*language));
    j += ",\"error\":" + to_json(r.error());
  }
  return j + "}";
}

bool parse_seconds(const std::string& arg, std::chrono::milliseconds* out) {
  char* end = nullptr;
  errno = 0;
  double secs = std::strtod(arg.c_str(), &end);
  if (arg.empty() || *end || errno || !std::isfinite(secs) || secs <= 0 || secs > 1e6) return false;
  *out = std::chrono::milliseconds(static_cast<int64_t>(std::llround(secs * 1000)));
  return true;
}

bool parse_expose(const std::string& arg, PortMapping* out) {
  auto num = [](const std::string& s, uint32_t* v) {
    char* end = nullptr;
    unsigned long n = std::strtoul(s.c_str(), &end, 10);
    if (s.empty() || *end || n > 65535) return false;
    *v = static_cast<uint32_t>(n);
    return true;
  };
  auto colon = arg.find(':');
  PortMapping m;
  if (!num(arg.substr(0, colon), &m.internal) || m.internal == 0) return false;
  if (colon != std::string::npos && arg.substr(colon + 1) == "unix") m.unix_socket = true;
  else if (colon != std::string::npos && !num(arg.substr(colon + 1), &m.external)) return false;
  *out = m;
  return true;
}

std::string describe_exposed(const std::vector<ExposedPort>& ports) {
  std::string out;
  for (const auto& p : ports) out += "sandboxctl: guest port " + std::to_string(p.internal) + " at " + p.url + "\n";
  // A Unix socket is reached with, say, curl --unix-socket PATH http://localhost/.
  return out;
}

}  // namespace sandbox::ctl
