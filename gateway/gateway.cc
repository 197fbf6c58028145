#include "gateway/gateway.h"

#include <httplib.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <thread>

#include <sandbox/client.h>
#include <sandbox/json.h>
#include <sandbox/limits.h>

#include "common/json_parse.h"
#include "gateway/http_server.h"
#include "gateway/peer.h"

namespace sandbox::gateway {

extern const char* const kOpenApiJson;

namespace {

using ms = std::chrono::milliseconds;

// Where /execute copies the plain files at the top of the guest's
// /tmp/output for the file calls, which only reach the session's home
// (/tmp is a mount of its own: a rename would cross it). At most 100.
constexpr const char* kOutputDir = ".sandbox-gateway-output";
constexpr const char* kCollectPython =
    "import os as _o, shutil as _s\n"
    "_d = _o.path.expanduser('~/.sandbox-gateway-output')\n"
    "try:\n"
    "    _o.makedirs(_d, exist_ok=True)\n"
    "    for _n in sorted(_o.listdir('/tmp/output'))[:100]:\n"
    "        _p = '/tmp/output/' + _n\n"
    "        if _o.path.isfile(_p) and not _o.path.islink(_p):\n"
    "            _s.copyfile(_p, _d + '/' + _n)\n"
    "except OSError:\n"
    "    pass\n";
constexpr const char* kCollectJavascript =
    "try { const fs = require('fs'), d = require('os').homedir() + '/.sandbox-gateway-output';"
    " fs.mkdirSync(d, { recursive: true });"
    " for (const n of fs.readdirSync('/tmp/output').sort().slice(0, 100)) {"
    " const p = '/tmp/output/' + n; if (fs.lstatSync(p).isFile()) fs.copyFileSync(p, d + '/' + n); } } catch (e) {}";
constexpr const char* kCollectRaw =
    "( d=~/.sandbox-gateway-output; mkdir -p \"$d\"; n=0; for f in /tmp/output/*; do"
    " [ $n -ge 100 ] && break; n=$((n+1)); [ -f \"$f\" ] && [ ! -L \"$f\" ] && cp -- \"$f\" \"$d/\"; done ) 2>/dev/null; true";
// The collecting exec is trivial; this bounds a guest that is not.
constexpr ms kCollectTimeout{10'000};
// Idle timeout of /execute's session: it is closed at once anyway.
constexpr ms kExecuteSessionIdle{60'000};
// How long a streamed run's status waits for the daemon's first answer.
// A run the daemon refuses (busy, limits) is refused in the loop turn that
// reads it, so it is known well within this; the first line of output ends
// the wait at once, so only the headers of a run that is still booting
// wait this long, never its output.
constexpr ms kStreamRefusalWait{500};

int http_status(ErrorCode c) {
  switch (c) {
    case ErrorCode::invalid_argument: return 400;
    case ErrorCode::permission_denied: return 403;
    case ErrorCode::package_not_allowed: return 403;
    case ErrorCode::package_install_failed: return 422;
    case ErrorCode::not_found: return 404;
    case ErrorCode::session_closed: return 410;
    case ErrorCode::capacity: return 429;
    case ErrorCode::communication: return 502;
    case ErrorCode::vm_boot_failed: return 503;
    case ErrorCode::timeout: return 504;
    default: return 500;
  }
}

std::string seconds_json(uint64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(ms) / 1000.0);
  return buf;
}

// "data" and, for bytes that are not UTF-8, "data_base64".
std::string bytes_members(std::string_view key, std::string_view data) {
  std::string out = json_string(key) + ":" + json_string(data);
  if (!is_valid_utf8(data)) out += "," + json_string(std::string(key) + "_base64") + ":" + json_string(base64(data));
  return out;
}

bool is_loopback(const std::string& addr) {
  return addr == "::1" || addr.rfind("127.", 0) == 0 || addr.rfind("::ffff:127.", 0) == 0;
}

std::string url_escape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// The HTTP-side counters, appended to the daemon's text at /metrics.
struct GatewayMetrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (route, status)
  std::atomic<uint64_t> cancelled{0};
  std::atomic<uint64_t> files_served{0};
  std::atomic<int64_t> in_flight{0};

  void count(const std::string& route, int status) {
    std::lock_guard lock(mu);
    ++requests[{route, status}];
  }
  std::string render(uint64_t store_bytes, bool daemon_up) {
    std::string t = "# HELP sandbox_gateway_requests_total HTTP requests by route and status.\n"
                    "# TYPE sandbox_gateway_requests_total counter\n";
    {
      std::lock_guard lock(mu);
      for (const auto& [k, n] : requests)
        t += "sandbox_gateway_requests_total{route=\"" + k.first + "\",status=\"" + std::to_string(k.second) + "\"} " +
             std::to_string(n) + "\n";
    }
    t += "# HELP sandbox_gateway_requests_in_flight HTTP requests being served.\n"
         "# TYPE sandbox_gateway_requests_in_flight gauge\nsandbox_gateway_requests_in_flight " +
         std::to_string(in_flight.load()) + "\n";
    t += "# HELP sandbox_gateway_cancelled_total Runs and execs cancelled because their HTTP client went away.\n"
         "# TYPE sandbox_gateway_cancelled_total counter\nsandbox_gateway_cancelled_total " +
         std::to_string(cancelled.load()) + "\n";
    t += "# HELP sandbox_gateway_files_served_total Output files downloaded.\n"
         "# TYPE sandbox_gateway_files_served_total counter\nsandbox_gateway_files_served_total " +
         std::to_string(files_served.load()) + "\n";
    t += "# HELP sandbox_gateway_file_store_bytes Bytes of output files held for download.\n"
         "# TYPE sandbox_gateway_file_store_bytes gauge\nsandbox_gateway_file_store_bytes " +
         std::to_string(store_bytes) + "\n";
    t += "# HELP sandbox_gateway_daemon_up Whether sandboxd answered.\n"
         "# TYPE sandbox_gateway_daemon_up gauge\nsandbox_gateway_daemon_up " + std::string(daemon_up ? "1" : "0") +
         "\n";
    return t;
  }
};

// A request body's run parameters.
struct RunArgs {
  RunRequest request;
  bool stream = false;
  bool idle_given = false;
  ms idle{0};
};

Result<RunArgs> run_args(const JsonValue& body, const Options& o, bool strict, bool need_code) {
  auto bad = [](std::string m) { return Error::make(ErrorCode::invalid_argument, std::move(m)); };
  if (!body.is(JsonValue::Type::object)) return bad("the body must be a JSON object");
  RunArgs a;
  a.request.timeout = o.default_timeout;
  a.request.memory_mb = limits::kDefaultMemoryMb;
  bool have_code = false;
  for (const auto& [key, v] : body.members()) {
    if (key == "code") {
      auto s = v.string();
      if (!s) return bad("'code' must be a string");
      a.request.code = std::string(*s);
      have_code = true;
    } else if (key == "language") {
      auto s = v.string();
      auto lang = s ? parse_language(*s) : std::nullopt;
      if (!lang) return bad("'language' must be python, javascript or raw");
      a.request.language = *lang;
    } else if (key == "timeout") {
      auto n = v.number();
      if (!n || *n <= 0 || *n > limits::kMaxTimeoutMs / 1000.0)
        return bad("'timeout' must be a number of seconds up to " + std::to_string(limits::kMaxTimeoutMs / 1000));
      a.request.timeout = ms(static_cast<int64_t>(std::llround(*n * 1000)));
    } else if (key == "memory_mb") {
      auto n = v.integer();
      if (!n || *n <= 0 || *n > UINT32_MAX) return bad("'memory_mb' must be a positive integer");
      a.request.memory_mb = static_cast<uint32_t>(*n);
    } else if (key == "env") {
      if (!v.is(JsonValue::Type::object)) return bad("'env' must be an object of strings");
      if (v.members().size() > limits::kMaxEnvVars) return bad("'env' has too many variables");
      for (const auto& [name, value] : v.members()) {
        auto s = value.string();
        if (!s) return bad("'env' values must be strings");
        a.request.env.emplace_back(name, std::string(*s));
      }
    } else if (key == "allow_network") {
      auto b = v.boolean();
      if (!b) return bad("'allow_network' must be true or false");
      a.request.net.network = *b;
    } else if (key == "allowed_domains") {
      if (!v.is(JsonValue::Type::array)) return bad("'allowed_domains' must be an array of names");
      if (v.items().size() > limits::kMaxAllowedDomains)
        return bad("'allowed_domains' has more than " + std::to_string(limits::kMaxAllowedDomains) + " entries");
      for (const auto& item : v.items()) {
        auto name = item.string();
        if (!name) return bad("'allowed_domains' entries must be strings");
        a.request.net.allowed_domains.emplace_back(*name);
      }
    } else if (key == "expose_ports") {
      // Guest port, or {"internal": guest, "external": host}; the host port
      // is on the daemon's loopback, where the gateway runs.
      if (!v.is(JsonValue::Type::array)) return bad("'expose_ports' must be an array");
      if (v.items().size() > limits::kMaxExposedPorts)
        return bad("'expose_ports' has more than " + std::to_string(limits::kMaxExposedPorts) + " entries");
      for (const auto& item : v.items()) {
        PortMapping m;
        auto port = [](const JsonValue* j) -> std::optional<uint32_t> {
          auto n = j ? j->integer() : std::nullopt;
          if (!n || *n < 0 || *n > 65535) return std::nullopt;
          return static_cast<uint32_t>(*n);
        };
        if (auto n = port(&item)) {
          m.internal = *n;
        } else if (item.is(JsonValue::Type::object)) {
          auto internal = port(item.get("internal"));
          auto external = item.get("external") ? port(item.get("external")) : std::optional<uint32_t>(0);
          if (!internal || !external || item.members().size() > 2u)
            return bad("'expose_ports' objects are {\"internal\": PORT, \"external\": PORT}");
          m.internal = *internal;
          m.external = *external;
        } else {
          return bad("'expose_ports' entries are port numbers or {\"internal\", \"external\"} objects");
        }
        a.request.net.expose_ports.push_back(m);
      }
    } else if (key == "packages") {
      if (!v.is(JsonValue::Type::array) || v.items().size() > limits::kMaxPackages)
        return bad("'packages' must be a list of at most " + std::to_string(limits::kMaxPackages) + " strings");
      for (const auto& item : v.items()) {
        auto s = item.string();
        if (!s) return bad("'packages' must be a list of strings");
        a.request.packages.emplace_back(*s);
      }
    } else if (key == "stream") {
      auto b = v.boolean();
      if (!b) return bad("'stream' must be true or false");
      a.stream = *b;
    } else if (key == "idle_timeout") {
      auto n = v.number();
      if (!n || *n <= 0 || *n > 86'400) return bad("'idle_timeout' must be a number of seconds");
      a.idle = ms(static_cast<int64_t>(std::llround(*n * 1000)));
      a.idle_given = true;
    } else if (strict) {
      return bad("unknown field '" + key.substr(0, 64) + "'");
    }
  }
  if (need_code && !have_code) return bad("'code' is required");
  return a;
}

constexpr const char* kExposeNeedsStream =
    "exposed ports are reachable only while the code runs: ask for a stream (the mappings come first) or open a session";

// A session with a run's parameters.
SessionOptions session_options(const RunRequest& r) {
  SessionOptions so;
  so.language = r.language;
  so.env = r.env;
  so.timeout = r.timeout;
  so.memory_mb = r.memory_mb;
  so.net = r.net;
  so.packages = r.packages;
  return so;
}

std::string exposed_json(const std::vector<ExposedPort>& ports) {
  std::string out = "[";
  for (size_t i = 0; i < ports.size(); ++i) out += (i ? "," : "") + to_json(ports[i]);
  return out + "]";
}

std::string strings_json(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + json_string(v[i]);
  return out + "]";
}

// A streamed run between the thread that runs it and the response that
// writes it: NDJSON lines in order, then how the run ended.
class StreamedRun {
 public:
  std::thread worker;
  std::atomic<bool> stop{false};  // the response is gone: cancel the run

  ~StreamedRun() {
    // The worker may hold the last reference: it cannot join itself.
    if (worker.joinable() && worker.get_id() == std::this_thread::get_id()) worker.detach();
    join();
  }
  void push(std::string line) {
    {
      std::lock_guard lock(mu_);
      lines_.push_back(std::move(line));
    }
    cv_.notify_all();
  }
  void end(Result<RunResult> r) {
    {
      std::lock_guard lock(mu_);
      result_ = std::move(r);
    }
    cv_.notify_all();
  }
  // The error the run ended in if it ended before any line, within `wait`.
  std::optional<Error> refusal(ms wait) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, wait, [&] { return !lines_.empty() || result_; });
    if (lines_.empty() && result_ && !*result_) return result_->error();
    return std::nullopt;
  }
  // The lines so far, and the result once they are all taken; waits a
  // little for either (the caller checks for cancellation in between).
  std::pair<std::deque<std::string>, std::optional<Result<RunResult>>> next() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return !lines_.empty() || result_; });
    auto lines = std::exchange(lines_, {});
    return {std::move(lines), result_};
  }
  void join() {
    std::lock_guard lock(join_mu_);
    if (worker.joinable()) worker.join();
  }

 private:
  std::mutex mu_, join_mu_;
  std::condition_variable cv_;
  std::deque<std::string> lines_;
  std::optional<Result<RunResult>> result_;
};

class Gateway {
 public:
  Gateway(Options o, Tokens t)
      : o_(std::move(o)), tokens_(std::move(t)), files_(o_.store_bytes, o_.file_ttl) {
    if (o_.base_url.empty()) {
      bool v6 = o_.host.find(':') != std::string::npos;
      o_.base_url = "http://" + (v6 ? "[" + o_.host + "]" : o_.host) + ":" + std::to_string(o_.port);
    }
  }
  void routes(httplib::Server& s);
  void set_port(int port) {
    if (o_.base_url.ends_with(":0")) o_.base_url = o_.base_url.substr(0, o_.base_url.size() - 1) + std::to_string(port);
    o_.port = port;
  }

 private:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&, const Token&)>;
  // Authenticates, applies the token's quota and the body cap, counts.
  httplib::Server::Handler authed(std::string route, Handler h, bool upload = false);
  httplib::Server::Handler open(std::string route, std::function<void(const httplib::Request&, httplib::Response&)> h);

  Client client(const std::shared_ptr<PeerWatch>& peer = nullptr) const {
    Client c(o_.socket);
    // Busy is the caller's to retry (429 and Retry-After), not ours to hide.
    c.set_capacity_wait(ms(0));
    if (peer) c.set_cancel_check([peer] { return peer->gone(); });
    return c;
  }
  static std::shared_ptr<PeerWatch> watch(const httplib::Request& req) {
    return std::make_shared<PeerWatch>(req.remote_addr, req.remote_port, req.local_port);
  }

  void execute(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void runs(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void health(const httplib::Request& req, httplib::Response& res);
  void metrics(const httplib::Request& req, httplib::Response& res);
  void download(const httplib::Request& req, httplib::Response& res);
  void session_create(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void session_list(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void session_exec(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void session_delete(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void session_network(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void file_put(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void file_get(const httplib::Request& req, httplib::Response& res, const Token& tok);
  void file_list(const httplib::Request& req, httplib::Response& res, const Token& tok);

  // The session `id` if `tok` opened it (404 answered otherwise).
  std::optional<Session> owned(const std::string& id, const Token& tok, httplib::Response& res,
                               const std::shared_ptr<PeerWatch>& peer = nullptr);
  // Forgets sessions the daemon no longer has; the daemon's list of ours.
  Result<std::vector<SessionInfo>> prune();
  void forget(const std::string& id) {
    std::lock_guard lock(mu_);
    owners_.erase(id);
  }
  // Files /execute's code left in /tmp/output, stored for download.
  std::string collect_files(const Session& s, Language language);
  void error(httplib::Response& res, const Error& e);
  void cancelled() { ++metrics_.cancelled; }

  Options o_;
  Tokens tokens_;
  Quotas quotas_;
  FileStore files_;
  GatewayMetrics metrics_;
  std::mutex mu_;
  std::map<std::string, std::string> owners_;  // session id -> token name
  // The quota hold of the request this worker thread is serving.
  static thread_local std::shared_ptr<Quotas::Hold> current_hold_;
};

thread_local std::shared_ptr<Quotas::Hold> Gateway::current_hold_;

void Gateway::error(httplib::Response& res, const Error& e) {
  res.status = http_status(e.code);
  if (e.code == ErrorCode::capacity) res.set_header("Retry-After", "1");
  res.set_content("{\"error\":" + to_json(e) + "}", "application/json");
}

httplib::Server::Handler Gateway::open(std::string route,
                                       std::function<void(const httplib::Request&, httplib::Response&)> h) {
  return [this, route, h](const httplib::Request& req, httplib::Response& res) {
    ++metrics_.in_flight;
    h(req, res);
    --metrics_.in_flight;
    metrics_.count(route, res.status);
  };
}

httplib::Server::Handler Gateway::authed(std::string route, Handler h, bool upload) {
  return [this, route, h, upload](const httplib::Request& req, httplib::Response& res) {
    ++metrics_.in_flight;
    auto done = [&] {
      --metrics_.in_flight;
      metrics_.count(route, res.status);
    };
    auto tok = tokens_.check(req.get_header_value("Authorization"));
    if (!tok) {
      res.set_header("WWW-Authenticate", "Bearer");
      error(res, Error::make(ErrorCode::permission_denied, "a valid bearer token is required"));
      res.status = 401;
      return done();
    }
    if (!upload && req.body.size() > o_.max_body) {
      error(res, Error::make(ErrorCode::invalid_argument,
                             "the body is over " + std::to_string(o_.max_body) + " bytes"));
      res.status = 413;
      return done();
    }
    auto hold = quotas_.take(*tok);
    if (!hold) {
      error(res, Error::make(ErrorCode::capacity, "token '" + tok->name + "' already has " +
                                                      std::to_string(tok->max_concurrent) + " requests in flight"));
      return done();
    }
    // A streamed response runs after the handler returns: it takes the
    // hold along (see runs()).
    current_hold_ = std::make_shared<Quotas::Hold>(std::move(*hold));
    h(req, res, *tok);
    current_hold_.reset();
    done();
  };
}

void Gateway::routes(httplib::Server& s) {
  s.Post("/execute", authed("/execute", [this](auto& q, auto& r, auto& t) { execute(q, r, t); }));
  s.Post("/v1/runs", authed("/v1/runs", [this](auto& q, auto& r, auto& t) { runs(q, r, t); }));
  s.Post("/v1/sessions", authed("/v1/sessions", [this](auto& q, auto& r, auto& t) { session_create(q, r, t); }));
  s.Get("/v1/sessions", authed("/v1/sessions", [this](auto& q, auto& r, auto& t) { session_list(q, r, t); }));
  s.Put(R"(/v1/sessions/([A-Za-z0-9_-]{1,64})/network)",
        authed("/v1/sessions/{id}/network", [this](auto& q, auto& r, auto& t) { session_network(q, r, t); }));
  s.Delete(R"(/v1/sessions/([A-Za-z0-9_-]{1,64}))",
           authed("/v1/sessions/{id}", [this](auto& q, auto& r, auto& t) { session_delete(q, r, t); }));
  s.Post(R"(/v1/sessions/([A-Za-z0-9_-]{1,64})/exec)",
         authed("/v1/sessions/{id}/exec", [this](auto& q, auto& r, auto& t) { session_exec(q, r, t); }));
  s.Get(R"(/v1/sessions/([A-Za-z0-9_-]{1,64})/files)",
        authed("/v1/sessions/{id}/files", [this](auto& q, auto& r, auto& t) { file_list(q, r, t); }));
  s.Put(R"(/v1/sessions/([A-Za-z0-9_-]{1,64})/files/(.+))",
        authed("/v1/sessions/{id}/files/{path}", [this](auto& q, auto& r, auto& t) { file_put(q, r, t); }, true));
  s.Get(R"(/v1/sessions/([A-Za-z0-9_-]{1,64})/files/(.+))",
        authed("/v1/sessions/{id}/files/{path}", [this](auto& q, auto& r, auto& t) { file_get(q, r, t); }));
  s.Get("/health", open("/health", [this](auto& q, auto& r) { health(q, r); }));
  s.Get("/metrics", open("/metrics", [this](auto& q, auto& r) { metrics(q, r); }));
  s.Get(R"(/files/([0-9a-f]{32})(/.*)?)", open("/files/{token}", [this](auto& q, auto& r) { download(q, r); }));
  s.Get("/openapi.json", open("/openapi.json", [](auto&, auto& r) { r.set_content(kOpenApiJson, "application/json"); }));
}

void Gateway::execute(const httplib::Request& req, httplib::Response& res, const Token&) {
  auto shape = [&](int status, const RunResult* r, const std::string& err, const std::string& files,
                   std::optional<ErrorCode> code) {
    res.status = status;
    std::string j = "{\"success\":" + std::string(r && r->exit_code == 0 && r->signal == 0 && !r->timed_out ? "true" : "false");
    j += "," + bytes_members("stdout", r ? std::string_view(r->stdout_data) : "");
    j += "," + bytes_members("stderr", r ? std::string_view(r->stderr_data) : "");
    j += ",\"exit_code\":" + (r ? std::to_string(r->exit_code) : "null");
    j += ",\"execution_time\":" + seconds_json(r ? r->execution_time_ms : 0);
    j += ",\"error\":" + (err.empty() ? "null" : json_string(err));
    j += ",\"files\":" + (files.empty() ? "[]" : files);
    if (code) j += ",\"code\":" + json_string(error_code_name(*code));
    if (r) j += ",\"timed_out\":" + std::string(r->timed_out ? "true" : "false") + ",\"language\":" +
                json_string(language_name(r->language)) + ",\"network\":" + to_json(r->network);
    res.set_content(j + "}", "application/json");
  };
  auto fail = [&](const Error& e) {
    if (e.code == ErrorCode::capacity) res.set_header("Retry-After", "1");
    shape(http_status(e.code), nullptr, e.message, "", e.code);
  };
  auto body = parse_json(req.body, JsonLimits{o_.max_body, 32, 65536});
  if (!body) return fail(Error::make(ErrorCode::invalid_argument, "the body is not JSON: " + body.error().message));
  auto args = run_args(*body, o_, false, true);
  if (!args) return fail(args.error());
  if (!args->request.net.expose_ports.empty()) return fail(Error::make(ErrorCode::invalid_argument, kExposeNeedsStream));
  auto peer = watch(req);
  SessionOptions so = session_options(args->request);
  so.idle_timeout = kExecuteSessionIdle;
  auto session = client(peer).create_session(so);
  if (!session) {
    if (peer->gone()) cancelled();
    return fail(session.error());
  }
  // Whatever happens next, the session goes, even if the caller did.
  Session closer = *session;
  closer.set_cancel_check({});
  auto r = session->exec(args->request.code, {}, args->request.timeout);
  std::string files;
  if (r && !peer->gone()) files = collect_files(closer, args->request.language);
  (void)closer.close();
  if (!r) {
    if (peer->gone()) cancelled();
    return fail(r.error());
  }
  std::string err;
  if (r->timed_out)
    err = "timed out after " + seconds_json(static_cast<uint64_t>(args->request.timeout.count())) + " s";
  else if (r->signal)
    err = "killed by signal " + std::to_string(r->signal);
  else if (r->exit_code)
    err = "exited with code " + std::to_string(r->exit_code);
  shape(r->timed_out ? 504 : 200, &*r, err, files, std::nullopt);
}

std::string Gateway::collect_files(const Session& s, Language language) {
  const char* code = language == Language::python ? kCollectPython
                     : language == Language::javascript ? kCollectJavascript
                                                        : kCollectRaw;
  auto moved = s.exec(code, {}, kCollectTimeout);
  if (!moved) return {};
  auto listing = s.list_files(kOutputDir);
  if (!listing) return {};
  std::string out = "[";
  size_t count = 0;
  uint64_t total = 0;
  for (const auto& e : listing->entries) {
    // Plain files at the top of /tmp/output, within the limits; the rest
    // is left out rather than failing the run.
    if (e.is_dir || count >= o_.max_files || e.size > o_.max_file_bytes || total + e.size > o_.max_files_bytes) continue;
    auto data = s.read_file(std::string(kOutputDir) + "/" + e.name);
    if (!data || data->size() > o_.max_file_bytes || total + data->size() > o_.max_files_bytes) continue;
    uint64_t size = data->size();
    auto token = files_.put(e.name, std::move(*data));
    if (!token) break;
    total += size;
    auto expires = std::chrono::duration_cast<std::chrono::seconds>(
                       (std::chrono::system_clock::now() + o_.file_ttl).time_since_epoch())
                       .count();
    out += std::string(count ? "," : "") + "{\"name\":" + json_string(e.name) + ",\"size\":" + std::to_string(size) +
           ",\"url\":" + json_string(o_.base_url + "/files/" + *token + "/" + url_escape(e.name)) +
           ",\"expires_at\":" + std::to_string(expires) + "}";
    ++count;
  }
  return out + "]";
}

void Gateway::runs(const httplib::Request& req, httplib::Response& res, const Token&) {
  auto body = parse_json(req.body, JsonLimits{o_.max_body, 32, 65536});
  if (!body) return error(res, Error::make(ErrorCode::invalid_argument, "the body is not JSON: " + body.error().message));
  auto args = run_args(*body, o_, true, true);
  if (!args) return error(res, args.error());
  bool stream = args->stream || req.get_header_value("Accept").find("application/x-ndjson") != std::string::npos;
  if (!stream && !args->request.net.expose_ports.empty())
    return error(res, Error::make(ErrorCode::invalid_argument, kExposeNeedsStream));
  auto peer = watch(req);
  if (!stream) {
    auto r = client(peer).run(args->request);
    if (!r) {
      if (peer->gone()) cancelled();
      return error(res, r.error());
    }
    res.status = r->timed_out ? 504 : 200;
    res.set_content(to_json(*r), "application/json");
    return;
  }
  // NDJSON: one object per output chunk as it happens, then the result (or
  // the error). The run goes on its own thread from here; the status waits
  // for its first answer (kStreamRefusalWait at most): a run refused before
  // anything came gets the error's status, as without stream (429 and
  // Retry-After for capacity); anything else is 200 and the stream.
  auto run = std::make_shared<StreamedRun>();
  auto request = std::make_shared<RunRequest>(std::move(args->request));
  auto c = std::make_shared<Client>(client());
  c->set_cancel_check([run, peer] { return run->stop || peer->gone(); });
  run->worker = std::thread([run, request, c] {
    auto output = [&](Stream s, std::string_view data) {
      run->push("{\"type\":\"output\",\"stream\":" + json_string(stream_name(s)) + "," + bytes_members("data", data) + "}\n");
    };
    Result<RunResult> r = Error::make(ErrorCode::internal, "not run");
    if (request->net.expose_ports.empty()) {
      r = c->run(*request, output);
    } else {
      // Exposed ports: a session for one exec, so the mappings are known
      // (and sent) before the code starts.
      auto session = c->create_session(session_options(*request));
      if (!session) {
        r = session.error();
      } else {
        Session closer = *session;
        closer.set_cancel_check({});
        run->push("{\"type\":\"exposed_ports\",\"exposed_ports\":" + exposed_json(session->info().exposed_ports) + "}\n");
        r = session->exec(request->code, output, request->timeout);
        (void)closer.close();
      }
    }
    run->end(std::move(r));
  });
  if (auto refused = run->refusal(kStreamRefusalWait)) {
    run->join();
    if (peer->gone()) cancelled();
    return error(res, *refused);
  }
  auto hold = current_hold_;
  ++metrics_.in_flight;
  auto streaming = std::shared_ptr<void>(nullptr, [this](void*) { --metrics_.in_flight; });
  res.set_chunked_content_provider(
      "application/x-ndjson",
      [this, run, peer, hold, streaming](size_t, httplib::DataSink& sink) {
        for (;;) {
          auto [lines, result] = run->next();
          for (const auto& line : lines)
            if (!sink.is_writable() || !sink.write(line.data(), line.size())) {
              run->stop = true;  // the run is cancelled and its VM destroyed
              break;
            }
          if (run->stop || peer->gone()) {
            run->join();
            cancelled();
            return false;
          }
          if (!result) continue;
          std::string last = *result ? "{\"type\":\"result\",\"result\":" + to_json(**result) + "}\n"
                                     : "{\"type\":\"error\",\"error\":" + to_json(result->error()) + "}\n";
          if (!sink.is_writable() || !sink.write(last.data(), last.size())) return false;
          sink.done();
          return true;
        }
      },
      // Also when the provider never ran (the connection went first).
      [run](bool) {
        run->stop = true;
        run->join();
      });
}

void Gateway::health(const httplib::Request&, httplib::Response& res) {
  auto st = client().status();
  if (!st) {
    res.status = 503;
    res.set_content("{\"status\":\"unavailable\",\"error\":" + to_json(st.error()) + "}", "application/json");
    return;
  }
  std::string pool = "[";
  for (size_t i = 0; i < st->pool.size(); ++i) {
    const auto& p = st->pool[i];
    pool += std::string(i ? "," : "") + "{\"language\":" + json_string(language_name(p.language)) +
            ",\"size\":" + std::to_string(p.target) + ",\"ready\":" + std::to_string(p.ready) +
            ",\"booting\":" + std::to_string(p.booting) + "}";
  }
  res.set_content("{\"status\":\"ok\",\"version\":" + json_string(st->version) +
                      ",\"accelerator\":" + json_string(st->accelerator) + ",\"vms\":" + std::to_string(st->vms) +
                      ",\"max_vms\":" + std::to_string(st->max_vms) + ",\"runs_active\":" +
                      std::to_string(st->runs_active) + ",\"queue\":" + std::to_string(st->runs_queued) +
                      ",\"sessions\":" + std::to_string(st->sessions) +
                      ",\"draining\":" + (st->draining ? "true" : "false") + ",\"pool\":" + pool + "]}",
                  "application/json");
}

void Gateway::metrics(const httplib::Request& req, httplib::Response& res) {
  if (!o_.metrics_public && !is_loopback(req.remote_addr)) {
    res.status = 403;
    res.set_content("metrics are served to loopback only (--metrics-public to change)\n", "text/plain");
    return;
  }
  auto text = client().metrics();
  std::string out = text ? *text : std::string();
  out += metrics_.render(files_.bytes(), text.ok());
  res.set_content(out, "text/plain; version=0.0.4; charset=utf-8");
}

void Gateway::download(const httplib::Request& req, httplib::Response& res) {
  auto f = files_.get(req.matches[1]);
  if (!f) {
    res.status = 404;
    res.set_content("{\"error\":{\"code\":\"not_found\",\"message\":\"no such file, or its link expired\"}}",
                    "application/json");
    return;
  }
  ++metrics_.files_served;
  res.set_header("Content-Disposition", "attachment; filename=\"" + url_escape(f->name) + "\"");
  res.set_content(std::move(f->data), "application/octet-stream");
}

std::optional<Session> Gateway::owned(const std::string& id, const Token& tok, httplib::Response& res,
                                      const std::shared_ptr<PeerWatch>& peer) {
  bool known = false;
  {
    std::lock_guard lock(mu_);
    auto it = owners_.find(id);
    if (it != owners_.end() && it->second == tok.name) return client(peer).session(id);
    known = it != owners_.end();
  }
  // An id this gateway never handed out may be one its predecessor did,
  // before a restart: the daemon remembers those as closed (410), which
  // tells a client its session is gone rather than never was. An open one
  // has no owner here and stays out of reach.
  if (!known && id.starts_with("s-")) {
    auto probe = client(peer).session(id).list_files();
    if (!probe && probe.error().code == ErrorCode::session_closed) {
      error(res, probe.error());
      return std::nullopt;
    }
  }
  // Another token's session is as good as none.
  error(res, Error::make(ErrorCode::not_found, "no session '" + id + "' of this token"));
  return std::nullopt;
}

void Gateway::session_create(const httplib::Request& req, httplib::Response& res, const Token& tok) {
  auto body = parse_json(req.body.empty() ? std::string("{}") : req.body, JsonLimits{o_.max_body, 32, 65536});
  if (!body) return error(res, Error::make(ErrorCode::invalid_argument, "the body is not JSON: " + body.error().message));
  auto args = run_args(*body, o_, true, false);
  if (!args) return error(res, args.error());
  if (!args->request.code.empty()) return error(res, Error::make(ErrorCode::invalid_argument, "a session takes no code"));
  bool full;
  {
    std::lock_guard lock(mu_);
    full = owners_.size() >= o_.max_sessions;
  }
  if (full) (void)prune();
  {
    std::lock_guard lock(mu_);
    if (owners_.size() >= o_.max_sessions)
      return error(res, Error::make(ErrorCode::capacity, "the gateway already holds " + std::to_string(o_.max_sessions) + " sessions"));
  }
  SessionOptions so = session_options(args->request);
  if (args->idle_given) so.idle_timeout = args->idle;
  auto peer = watch(req);
  auto s = client(peer).create_session(so);
  if (!s) return error(res, s.error());
  {
    std::lock_guard lock(mu_);
    owners_[s->id()] = tok.name;
  }
  res.status = 201;
  res.set_content("{\"session\":" + json_string(s->id()) + ",\"language\":" + json_string(language_name(so.language)) +
                      ",\"exposed_ports\":" + exposed_json(s->info().exposed_ports) +
                      ",\"allowed_domains\":" + strings_json(s->info().allowed_domains) + "}",
                  "application/json");
}

Result<std::vector<SessionInfo>> Gateway::prune() {
  std::vector<std::string> known;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, owner] : owners_) known.push_back(id);
  }
  auto all = client().sessions();
  if (!all) return all;
  // Sessions the daemon closed (idle, VM end) are forgotten; only those
  // known before asking, so one opened meanwhile is not lost.
  std::set<std::string> live;
  for (const auto& s : *all) live.insert(s.id);
  std::lock_guard lock(mu_);
  for (const auto& id : known)
    if (!live.count(id)) owners_.erase(id);
  return all;
}

void Gateway::session_list(const httplib::Request&, httplib::Response& res, const Token& tok) {
  auto all = prune();
  if (!all) return error(res, all.error());
  std::string out = "[";
  bool first = true;
  std::lock_guard lock(mu_);
  for (const auto& s : *all) {
    auto it = owners_.find(s.id);
    if (it == owners_.end() || it->second != tok.name) continue;
    out += (first ? "" : ",") + to_json(s);
    first = false;
  }
  res.set_content("{\"sessions\":" + out + "]}", "application/json");
}

void Gateway::session_exec(const httplib::Request& req, httplib::Response& res, const Token& tok) {
  auto body = parse_json(req.body, JsonLimits{o_.max_body, 32, 65536});
  if (!body) return error(res, Error::make(ErrorCode::invalid_argument, "the body is not JSON: " + body.error().message));
  if (!body->is(JsonValue::Type::object)) return error(res, Error::make(ErrorCode::invalid_argument, "the body must be a JSON object"));
  std::string code;
  ms timeout{0};
  for (const auto& [key, v] : body->members()) {
    if (key == "code" && v.string()) {
      code = std::string(*v.string());
    } else if (key == "timeout" && v.number() && *v.number() > 0 && *v.number() <= limits::kMaxTimeoutMs / 1000.0) {
      timeout = ms(static_cast<int64_t>(std::llround(*v.number() * 1000)));
    } else {
      return error(res, Error::make(ErrorCode::invalid_argument, "bad or unknown field '" + key.substr(0, 64) + "'"));
    }
  }
  auto peer = watch(req);
  auto s = owned(req.matches[1], tok, res, peer);
  if (!s) return;
  auto r = s->exec(code, {}, timeout);
  if (!r) {
    if (peer->gone()) cancelled();
    if (r.error().code == ErrorCode::not_found || r.error().code == ErrorCode::session_closed) forget(s->id());
    return error(res, r.error());
  }
  res.status = r->timed_out ? 504 : 200;
  res.set_content(to_json(*r), "application/json");
}

void Gateway::session_delete(const httplib::Request& req, httplib::Response& res, const Token& tok) {
  auto s = owned(req.matches[1], tok, res);
  if (!s) return;
  auto r = s->close();
  forget(s->id());
  if (!r && r.error().code != ErrorCode::session_closed) return error(res, r.error());
  res.status = 204;
}

// A live session's egress allowlist, replaced (empty: egress off).
void Gateway::session_network(const httplib::Request& req, httplib::Response& res, const Token& tok) {
  auto body = parse_json(req.body, JsonLimits{o_.max_body, 32, 65536});
  if (!body) return error(res, Error::make(ErrorCode::invalid_argument, "the body is not JSON: " + body.error().message));
  if (!body->is(JsonValue::Type::object)) return error(res, Error::make(ErrorCode::invalid_argument, "the body must be a JSON object"));
  for (const auto& [key, v] : body->members())
    if (key != "allowed_domains" && key != "allow_network")
      return error(res, Error::make(ErrorCode::invalid_argument, "unknown field '" + key.substr(0, 64) + "'"));
  auto args = run_args(*body, o_, true, false);
  if (!args) return error(res, args.error());
  auto s = owned(req.matches[1], tok, res);
  if (!s) return;
  auto info = s->set_network(args->request.net.allowed_domains, args->request.net.network);
  if (!info) {
    if (info.error().code == ErrorCode::not_found || info.error().code == ErrorCode::session_closed) forget(s->id());
    return error(res, info.error());
  }
  res.set_content(to_json(*info), "application/json");
}

void Gateway::file_put(const httplib::Request& req, httplib::Response& res, const Token& tok) {
  if (req.body.size() > o_.max_upload) {
    res.status = 413;
    return;
  }
  auto s = owned(req.matches[1], tok, res);
  if (!s) return;
  bool exec = req.get_param_value("executable") == "1" || req.get_param_value("executable") == "true";
  auto r = s->write_file(req.matches[2].str(), req.body, exec);
  if (!r) return error(res, r.error());
  res.status = 204;
}

void Gateway::file_get(const httplib::Request& req, httplib::Response& res, const Token& tok) {
  auto s = owned(req.matches[1], tok, res);
  if (!s) return;
  auto data = s->read_file(req.matches[2].str());
  if (!data) return error(res, data.error());
  res.set_content(std::move(*data), "application/octet-stream");
}

void Gateway::file_list(const httplib::Request& req, httplib::Response& res, const Token& tok) {
  auto s = owned(req.matches[1], tok, res);
  if (!s) return;
  auto l = s->list_files(req.get_param_value("path"));
  if (!l) return error(res, l.error());
  res.set_content(to_json(*l), "application/json");
}

}  // namespace

int serve(Options options, Tokens tokens) {
  httplib::Server server;
  // Uploads are the largest bodies; JSON routes check their own, smaller cap.
  configure_server(server, options.threads, std::max(options.max_body, options.max_upload));
  Gateway gw(options, std::move(tokens));
  gw.routes(server);
  int port = bind_server(server, options.host, options.port, "sandbox-gateway");
  if (port < 0) return 1;
  gw.set_port(port);
  std::fprintf(stderr, "sandbox-gateway: listening on %s:%d\n", options.host.c_str(), port);
  return server.listen_after_bind() ? 0 : 1;
}

}  // namespace sandbox::gateway
