#include "gateway/router.h"

#include <httplib.h>
#include <netdb.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <sandbox/result.h>
#include <sandbox/json.h>
#include <sandbox/limits.h>

#include "common/json_parse.h"
#include "gateway/http_server.h"
#include "gateway/srv.h"

namespace sandbox::gateway {

extern const char* const kOpenApiJson;

namespace {

using ms = std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// A node's /health answer is a few hundred bytes; more is not one.
constexpr size_t kMaxHealthBytes = 64 << 10;
// Connecting to a node on the same network: longer means it is not there.
constexpr auto kConnectTimeout = std::chrono::seconds(2);
// A node's answer takes at most the longest run plus its boot and the
// collection of its files.
constexpr auto kReplyTimeout = ms(limits::kMaxTimeoutMs) + std::chrono::seconds(120);
// Nodes from one SRV answer, after the parser's own bound.
constexpr size_t kMaxNodes = 256;

struct Node {
  std::string address;  // "host:port" as discovered
  std::string host;
  int port = 0;
  std::string tag;
  // Under Router::mu_.
  bool up = false;
  bool draining = false;
  uint32_t reported = 0;  // runs active and queued at the node's last poll
  uint32_t sessions = 0;
  std::string last_error;
  uint64_t drains_seen = 0;
  // Without the lock.
  std::atomic<uint32_t> in_flight{0};
  std::atomic<uint64_t> placements{0};
  std::atomic<uint64_t> failures{0};
};
using NodePtr = std::shared_ptr<Node>;

bool split_address(const std::string& a, std::string* host, int* port) {
  auto colon = a.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string h = a.substr(0, colon);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  auto p = a.substr(colon + 1);
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  int n = std::stoi(p);
  if (n <= 0 || n > 65535) return false;
  *host = h;
  *port = n;
  return true;
}

std::string join_address(const std::string& host, int port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool is_loopback(const std::string& addr) {
  return addr == "::1" || addr.rfind("127.", 0) == 0 || addr.rfind("::ffff:127.", 0) == 0;
}

std::string url_escape(std::string_view s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string error_body(ErrorCode code, const std::string& message) {
  return "{\"error\":" + to_json(Error::make(code, message)) + "}";
}

// python-sandbox's response shape for an /execute that did not run.
std::string execute_error_body(ErrorCode code, const std::string& message) {
  return "{\"success\":false,\"stdout\":\"\",\"stderr\":\"\",\"exit_code\":null,\"execution_time\":0.000,\"error\":" +
         json_string(message) + ",\"files\":[],\"code\":" + json_string(error_code_name(code)) + "}";
}

// A node's answer to one forwarded request.
struct Reply {
  bool connected = false;  // false: the request never reached the node
  bool complete = false;   // the whole answer arrived
  int status = 0;
  httplib::Headers headers;
  std::string body;
  std::string error;
};

class Router {
 public:
  explicit Router(RouterOptions o) : o_(std::move(o)), rng_(std::random_device{}()) {
    if (o_.base_url.empty()) o_.base_url = "http://" + join_address(o_.host, o_.port);
  }
  ~Router() { stop(); }
  void routes(httplib::Server& s);
  void set_port(int port) {
    if (o_.base_url.ends_with(":0")) o_.base_url = o_.base_url.substr(0, o_.base_url.size() - 1) + std::to_string(port);
    o_.port = port;
  }
  void start() {
    discover();
    poll();
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  httplib::Server::Handler counted(std::string route, Handler h, bool authed, bool upload = false);

  void loop();
  void discover();
  void poll();
  void check(const NodePtr& n);
  void mark_down(const NodePtr& n, const std::string& why);
  std::vector<NodePtr> placement(std::string_view key);
  NodePtr by_tag(const std::string& tag);

  Reply send(const NodePtr& n, const std::string& method, const std::string& path, const httplib::Request& in,
             const std::string& body, size_t cap);
  void relay(httplib::Response& res, const NodePtr& n, Reply& r);
  void fail(httplib::Response& res, bool execute, int status, ErrorCode code, const std::string& message);
  void offer(const std::vector<NodePtr>& order, const httplib::Request& req, const std::string& path, size_t cap,
             httplib::Response& res, bool execute, const std::string& doing,
             const std::function<void(const NodePtr&, Reply&)>& taken);

  void run(const httplib::Request& req, httplib::Response& res, bool execute);
  void run_streamed(const httplib::Request& req, httplib::Response& res, std::vector<NodePtr> order);
  void session_create(const httplib::Request& req, httplib::Response& res);
  void session_list(const httplib::Request& req, httplib::Response& res);
  void session_call(const httplib::Request& req, httplib::Response& res);
  void download(const httplib::Request& req, httplib::Response& res);
  void health(const httplib::Request& req, httplib::Response& res);
  void metrics(const httplib::Request& req, httplib::Response& res);
  std::string rewrite_files(const NodePtr& n, std::string body);

  RouterOptions o_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
  std::map<std::string, NodePtr> nodes_;  // by tag
  std::vector<std::string> srv_nodes_;    // the last good SRV answer
  std::mt19937_64 rng_;                   // under mu_
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> no_node_{0};
  std::atomic<uint64_t> srv_failures_{0};
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status), under mu_
};

void Router::loop() {
  auto next_discovery = Clock::now() + o_.discovery_interval;
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, o_.health_interval, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    if (Clock::now() >= next_discovery) {
      discover();
      next_discovery = Clock::now() + o_.discovery_interval;
    }
    poll();
    lock.lock();
  }
}

void Router::discover() {
  std::vector<std::string> found = o_.static_nodes;
  if (!o_.srv_name.empty()) {
    auto a = dns::query_srv(o_.dns_server, o_.srv_name, o_.health_timeout);
    if (!a || a->rcode != 0) {
      // A resolver's hiccup keeps the last answer: nodes leave on their own health.
      ++srv_failures_;
      std::fprintf(stderr, "sandbox-router: SRV %s: %s\n", o_.srv_name.c_str(),
                   a ? ("rcode " + std::to_string(a->rcode)).c_str() : a.error().describe().c_str());
    } else {
      std::vector<std::string> srv;
      for (const auto& r : a->records) {
        std::vector<std::string> addrs;
        if (auto it = a->addresses.find(r.target); it != a->addresses.end()) {
          addrs = it->second;
        } else {
          // Not in the additional section: the system resolver, as for any host name.
          addrinfo hints{};
          hints.ai_socktype = SOCK_STREAM;
          addrinfo* res = nullptr;
          if (getaddrinfo(r.target.c_str(), nullptr, &hints, &res) == 0) {
            char text[NI_MAXHOST];
            for (auto* p = res; p && addrs.empty(); p = p->ai_next)
              if (getnameinfo(p->ai_addr, p->ai_addrlen, text, sizeof text, nullptr, 0, NI_NUMERICHOST) == 0)
                addrs.emplace_back(text);
            freeaddrinfo(res);
          }
        }
        if (!addrs.empty()) srv.push_back(join_address(addrs.front(), r.port));
      }
      std::lock_guard lock(mu_);
      srv_nodes_ = std::move(srv);
    }
    std::lock_guard lock(mu_);
    found.insert(found.end(), srv_nodes_.begin(), srv_nodes_.end());
  }
  std::map<std::string, NodePtr> next;
  std::lock_guard lock(mu_);
  for (const auto& a : found) {
    if (next.size() >= kMaxNodes) break;
    auto tag = node_tag(a);
    if (next.count(tag)) continue;
    if (auto it = nodes_.find(tag); it != nodes_.end()) {
      next[tag] = it->second;
      continue;
    }
    auto n = std::make_shared<Node>();
    n->address = a;
    n->tag = tag;
    if (!split_address(a, &n->host, &n->port)) continue;
    std::fprintf(stderr, "sandbox-router: node %s at %s discovered\n", tag.c_str(), a.c_str());
    next[tag] = n;
  }
  for (const auto& [tag, n] : nodes_)
    if (!next.count(tag)) std::fprintf(stderr, "sandbox-router: node %s at %s is gone from discovery\n", tag.c_str(), n->address.c_str());
  nodes_ = std::move(next);
}

void Router::poll() {
  std::vector<NodePtr> all;
  {
    std::lock_guard lock(mu_);
    for (const auto& [tag, n] : nodes_) all.push_back(n);
  }
  // In parallel: one node that does not answer must not delay the others.
  std::vector<std::thread> threads;
  for (auto& n : all) threads.emplace_back([this, n] { check(n); });
  for (auto& t : threads) t.join();
}

void Router::check(const NodePtr& n) {
  httplib::Client c(n->host, n->port);
  auto secs = std::chrono::duration_cast<std::chrono::microseconds>(o_.health_timeout).count();
  c.set_connection_timeout(secs / 1000000, secs % 1000000);
  c.set_read_timeout(secs / 1000000, secs % 1000000);
  std::string body;
  bool too_big = false;
  auto r = c.Get("/health", [&](const char* d, size_t len) {
    if (body.size() + len > kMaxHealthBytes) return !(too_big = true);
    body.append(d, len);
    return true;
  });
  std::string why;
  bool draining = false;
  uint32_t load = 0, sessions = 0;
  if (!r) {
    why = too_big ? "its /health answer is too large" : "/health: " + httplib::to_string(r.error());
  } else if (r->status != 200) {
    why = "/health answered " + std::to_string(r->status);
  } else {
    auto j = parse_json(body, JsonLimits{kMaxHealthBytes, 8, 4096});
    auto field = [&](const char* k) -> uint32_t {
      auto* v = j ? j->get(k) : nullptr;
      auto i = v ? v->integer() : std::nullopt;
      return i && *i > 0 && *i < 1'000'000 ? static_cast<uint32_t>(*i) : 0;
    };
    auto* status = j ? j->get("status") : nullptr;
    if (!j || !j->is(JsonValue::Type::object) || !status || status->string() != "ok") {
      why = "/health is not ready";
    } else {
      auto* d = j->get("draining");
      draining = d && d->boolean().value_or(false);
      load = field("runs_active") + field("queue");
      sessions = field("sessions");
    }
  }
  std::lock_guard lock(mu_);
  bool was_up = n->up;
  if (why.empty()) {
    if (!was_up) std::fprintf(stderr, "sandbox-router: node %s at %s is ready\n", n->tag.c_str(), n->address.c_str());
    if (draining && !n->draining) {
      ++n->drains_seen;
      std::fprintf(stderr, "sandbox-router: node %s at %s is draining\n", n->tag.c_str(), n->address.c_str());
    }
    n->up = true;
    n->draining = draining;
    n->reported = load;
    n->sessions = sessions;
    n->last_error.clear();
  } else {
    if (was_up) std::fprintf(stderr, "sandbox-router: node %s at %s left rotation: %s\n", n->tag.c_str(), n->address.c_str(), why.c_str());
    n->up = false;
    n->last_error = why;
  }
}

void Router::mark_down(const NodePtr& n, const std::string& why) {
  std::lock_guard lock(mu_);
  if (n->up)
    std::fprintf(stderr, "sandbox-router: node %s at %s left rotation: %s\n", n->tag.c_str(), n->address.c_str(), why.c_str());
  n->up = false;
  n->last_error = why;
}

std::vector<NodePtr> Router::placement(std::string_view key) {
  std::lock_guard lock(mu_);
  std::vector<NodePtr> ready;
  std::vector<NodeLoad> loads;
  for (const auto& [tag, n] : nodes_) {
    if (!n->up || n->draining) continue;
    ready.push_back(n);
    // This router's own requests are current; the node's report also counts
    // other routers' and its sessions, a poll late.
    loads.push_back({tag, std::max(n->in_flight.load(), n->reported) + n->sessions});
  }
  auto order = placement_order(loads, key, o_.load_factor, [this](size_t n) {
    return static_cast<size_t>(std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_));
  });
  std::vector<NodePtr> out;
  for (size_t i : order) out.push_back(ready[i]);
  return out;
}

NodePtr Router::by_tag(const std::string& tag) {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(tag);
  return it == nodes_.end() ? nullptr : it->second;
}

Reply Router::send(const NodePtr& n, const std::string& method, const std::string& path, const httplib::Request& in,
                   const std::string& body, size_t cap) {
  Reply rep;
  httplib::Client c(n->host, n->port);
  c.set_connection_timeout(kConnectTimeout);
  c.set_read_timeout(kReplyTimeout);
  c.set_write_timeout(std::chrono::seconds(60));
  httplib::Request r;
  r.method = method;
  r.path = path;
  for (const char* h : {"Authorization", "Content-Type", "Accept"})
    if (in.has_header(h)) r.set_header(h, in.get_header_value(h));
  r.body = body;
  r.response_handler = [&](const httplib::Response& head) {
    rep.connected = true;
    rep.status = head.status;
    rep.headers = head.headers;
    return true;
  };
  bool too_big = false;
  r.content_receiver = [&](const char* d, size_t len, uint64_t, uint64_t) {
    if (rep.body.size() + len > cap) return !(too_big = true);
    rep.body.append(d, len);
    return true;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  ++n->in_flight;
  bool ok = c.send(r, res, err);
  --n->in_flight;
  {
    // The node's last report counted this request; it is over now.
    std::lock_guard lock(mu_);
    if (n->reported > 0) --n->reported;
  }
  // No status line: the node never took the request when connecting or
  // sending it failed; when it had it all and never answered, it may have
  // started the run (not to be repeated elsewhere).
  if (ok && res.status > 0 && !rep.connected) {
    // An answer without a body (204) may skip the response handler.
    rep.connected = true;
    rep.status = res.status;
    rep.headers = res.headers;
  }
  if (!rep.connected) rep.connected = err == httplib::Error::Read;
  rep.complete = ok && !too_big && rep.status != 0;
  if (!rep.complete) rep.error = too_big ? "its answer is over " + std::to_string(cap) + " bytes" : httplib::to_string(err);
  return rep;
}

void Router::relay(httplib::Response& res, const NodePtr& n, Reply& r) {
  res.status = r.status;
  for (const char* h : {"Retry-After", "WWW-Authenticate", "Content-Disposition"}) {
    auto it = r.headers.find(h);
    if (it != r.headers.end()) res.set_header(h, it->second);
  }
  auto ct = r.headers.find("Content-Type");
  res.set_header("X-Sandbox-Node", n->tag);
  if (!r.body.empty() || ct != r.headers.end())
    res.set_content(std::move(r.body), ct != r.headers.end() ? ct->second : "application/octet-stream");
}

void Router::fail(httplib::Response& res, bool execute, int status, ErrorCode code, const std::string& message) {
  res.status = status;
  if (code == ErrorCode::capacity) res.set_header("Retry-After", "1");
  res.set_content(execute ? execute_error_body(code, message) : error_body(code, message), "application/json");
}

httplib::Server::Handler Router::counted(std::string route, Handler h, bool authed, bool upload) {
  return [this, route, h, authed, upload](const httplib::Request& req, httplib::Response& res) {
    // The nodes check the token; one without any is refused here, cheaply.
    auto auth = req.get_header_value("Authorization");
    if (authed && (auth.rfind("Bearer ", 0) != 0 || auth.size() <= 7)) {
      res.set_header("WWW-Authenticate", "Bearer");
      fail(res, route == "/execute", 401, ErrorCode::permission_denied, "a valid bearer token is required");
    } else if (authed && !upload && req.body.size() > o_.max_body) {
      fail(res, route == "/execute", 413, ErrorCode::invalid_argument,
           "the body is over " + std::to_string(o_.max_body) + " bytes");
    } else {
      h(req, res);
    }
    std::lock_guard lock(mu_);
    ++requests_[{route, res.status}];
  };
}

void Router::routes(httplib::Server& s) {
  s.Post("/execute", counted("/execute", [this](auto& q, auto& r) { run(q, r, true); }, true));
  s.Post("/v1/runs", counted("/v1/runs", [this](auto& q, auto& r) { run(q, r, false); }, true));
  s.Post("/v1/sessions", counted("/v1/sessions", [this](auto& q, auto& r) { session_create(q, r); }, true));
  s.Get("/v1/sessions", counted("/v1/sessions", [this](auto& q, auto& r) { session_list(q, r); }, true));
  auto call = [this](auto& q, auto& r) { session_call(q, r); };
  s.Delete(R"(/v1/sessions/([A-Za-z0-9_-]{1,80}))", counted("/v1/sessions/{id}", call, true));
  s.Post(R"(/v1/sessions/([A-Za-z0-9_-]{1,80})/exec)", counted("/v1/sessions/{id}/exec", call, true));
  s.Get(R"(/v1/sessions/([A-Za-z0-9_-]{1,80})/files)", counted("/v1/sessions/{id}/files", call, true));
  s.Put(R"(/v1/sessions/([A-Za-z0-9_-]{1,80})/files/(.+))", counted("/v1/sessions/{id}/files/{path}", call, true, true));
  s.Get(R"(/v1/sessions/([A-Za-z0-9_-]{1,80})/files/(.+))", counted("/v1/sessions/{id}/files/{path}", call, true));
  s.Get(R"(/files/n([0-9a-f]{8})-([0-9a-f]{32})(/.*)?)", counted("/files/{token}", [this](auto& q, auto& r) { download(q, r); }, false));
  s.Get("/health", counted("/health", [this](auto& q, auto& r) { health(q, r); }, false));
  s.Get("/metrics", counted("/metrics", [this](auto& q, auto& r) { metrics(q, r); }, false));
  s.Get("/openapi.json", counted("/openapi.json", [](auto&, auto& r) { r.set_content(kOpenApiJson, "application/json"); }, false));
}

// The run's cache key from its body; nullopt (and the answer sent) for a
// body that is not a JSON object: the node would refuse it anyway.
struct RunShape {
  std::string key;
  bool stream = false;
};

std::optional<RunShape> run_shape(const httplib::Request& req, size_t max_body, std::string* why) {
  auto body = parse_json(req.body.empty() ? std::string("{}") : req.body, JsonLimits{max_body, 32, 65536});
  if (!body || !body->is(JsonValue::Type::object)) {
    *why = body ? "the body must be a JSON object" : "the body is not JSON: " + body.error().message;
    return std::nullopt;
  }
  RunShape s;
  std::string language = "python";
  std::vector<std::string> packages;
  if (auto* l = body->get("language"); l && l->string()) language = std::string(*l->string()).substr(0, 32);
  if (auto* p = body->get("packages"); p && p->is(JsonValue::Type::array))
    for (const auto& item : p->items())
      if (item.string() && packages.size() < 256) packages.emplace_back(std::string(*item.string()).substr(0, 256));
  if (auto* st = body->get("stream"); st && st->boolean()) s.stream = *st->boolean();
  s.key = cache_key(language, std::move(packages));
  return s;
}

void Router::run(const httplib::Request& req, httplib::Response& res, bool execute) {
  std::string why;
  auto shape = run_shape(req, o_.max_body, &why);
  if (!shape) return fail(res, execute, 400, ErrorCode::invalid_argument, why);
  auto order = placement(shape->key);
  if (order.empty()) {
    ++no_node_;
    return fail(res, execute, 503, ErrorCode::communication, "no sandboxd node is ready");
  }
  bool stream = !execute && (shape->stream || req.get_header_value("Accept").find("application/x-ndjson") != std::string::npos);
  if (stream) return run_streamed(req, res, std::move(order));
  offer(order, req, req.path, o_.max_reply, res, execute, "during the run", [&](const NodePtr& n, Reply& r) {
    if (r.status == 502) ++n->failures;  // the node's gateway lost its daemon mid-run
    if (execute && r.status == 200) r.body = rewrite_files(n, std::move(r.body));
    relay(res, n, r);
  });
}

// Offers a request to the nodes in `order` until one takes it: a node that
// cannot be reached is marked down and the next tried, and so is one that
// answers 429 (busy there need not mean busy everywhere); the caller gets
// that 429 only when no node took the request. `taken` answers with the
// complete reply of the node that did.
void Router::offer(const std::vector<NodePtr>& order, const httplib::Request& req, const std::string& path, size_t cap,
                   httplib::Response& res, bool execute, const std::string& doing,
                   const std::function<void(const NodePtr&, Reply&)>& taken) {
  std::optional<std::pair<NodePtr, Reply>> busy;
  for (size_t i = 0; i < order.size(); ++i) {
    auto& n = order[i];
    if (i) ++retries_;
    auto r = send(n, "POST", path, req, req.body, cap);
    if (!r.connected) {
      ++n->failures;
      mark_down(n, "forwarding: " + r.error);
      continue;
    }
    if (r.status == 429) {
      busy.emplace(n, std::move(r));
      continue;
    }
    ++n->placements;
    if (!r.complete) {
      ++n->failures;
      res.set_header("X-Sandbox-Node", n->tag);
      return fail(res, execute, 502, ErrorCode::communication, "node " + n->tag + " failed " + doing + ": " + r.error);
    }
    return taken(n, r);
  }
  if (busy) return relay(res, busy->first, busy->second);
  ++no_node_;
  fail(res, execute, 503, ErrorCode::communication, "no sandboxd node could be reached");
}

void Router::run_streamed(const httplib::Request& req, httplib::Response& res, std::vector<NodePtr> order) {
  // The status goes out before the run starts (200), as from a node; what
  // happens later is the stream's last line.
  auto body = std::make_shared<std::string>(req.body);
  auto path = req.path;
  httplib::Request head;  // the caller's headers, for forwarding
  for (const char* h : {"Authorization", "Content-Type", "Accept"})
    if (req.has_header(h)) head.set_header(h, req.get_header_value(h));
  auto in = std::make_shared<httplib::Request>(std::move(head));
  res.set_chunked_content_provider("application/x-ndjson", [this, body, path, in, order](size_t, httplib::DataSink& sink) {
    bool sent = false, broken = false;
    auto write = [&](const std::string& s) {
      if (broken) return;
      if (!sink.is_writable() || !sink.write(s.data(), s.size())) broken = true;
      sent = true;
    };
    std::string last_error = "no sandboxd node could be reached";
    ErrorCode last_code = ErrorCode::communication;
    for (size_t i = 0; i < order.size() && !broken; ++i) {
      const auto& n = order[i];
      if (i) ++retries_;
      httplib::Client c(n->host, n->port);
      c.set_connection_timeout(kConnectTimeout);
      c.set_read_timeout(kReplyTimeout);
      httplib::Request r;
      r.method = "POST";
      r.path = path;
      r.headers = in->headers;
      r.body = *body;
      int status = 0;
      std::string held;  // the first line (or a non-200 answer), until we know what it is
      bool busy = false, passing = false;
      r.response_handler = [&](const httplib::Response& h) {
        status = h.status;
        return true;
      };
      r.content_receiver = [&](const char* d, size_t len, uint64_t, uint64_t) {
        if (passing) {
          write(std::string(d, len));
          return !broken;
        }
        if (held.size() + len > kMaxHealthBytes) return false;
        held.append(d, len);
        if (status != 200) return true;
        auto nl = held.find('\n');
        if (nl == std::string::npos) return true;
        // A node at capacity says so in its first line; another node may take the run.
        auto first = std::string_view(held).substr(0, nl);
        if (first.find("\"type\":\"error\"") != std::string_view::npos &&
            first.find("\"code\":\"capacity\"") != std::string_view::npos) {
          busy = true;
          return false;
        }
        passing = true;
        write(held);
        held.clear();
        return !broken;
      };
      httplib::Response resp;
      httplib::Error err = httplib::Error::Success;
      ++n->in_flight;
      bool ok = c.send(r, resp, err);
      --n->in_flight;
      // Busy before streaming (429: the node's capacity or the token's quota there) or in its first line.
      if (busy || status == 429) {
        last_error = "every ready node is at capacity";
        last_code = ErrorCode::capacity;
        continue;
      }
      if (!status) {
        ++n->failures;
        mark_down(n, "forwarding: " + httplib::to_string(err));
        continue;
      }
      ++n->placements;
      if (status != 200) {
        // The node refused before streaming ({"error": ...}): the same, as the stream's line.
        if (held.size() > 1 && held.front() == '{' && held.find("\"error\"") != std::string::npos) {
          while (!held.empty() && (held.back() == '\n' || held.back() == ' ')) held.pop_back();
          write("{\"type\":\"error\"," + held.substr(1) + "\n");
        } else {
          write("{\"type\":\"error\",\"error\":" +
                to_json(Error::make(ErrorCode::communication, "node " + n->tag + " answered " + std::to_string(status))) + "}\n");
        }
      } else if (!ok || !held.empty()) {
        if (broken) return false;  // our caller went: the node's run was cancelled with the connection
        ++n->failures;
        if (!held.empty() && !passing) write(held);
        write("{\"type\":\"error\",\"error\":" +
              to_json(Error::make(ErrorCode::communication, "node " + n->tag + " failed during the run: " +
                                                                httplib::to_string(err))) + "}\n");
      }
      if (broken) return false;
      sink.done();
      return true;
    }
    if (broken) return false;
    (void)sent;
    write("{\"type\":\"error\",\"error\":" + to_json(Error::make(last_code, last_error)) + "}\n");
    sink.done();
    return true;
  });
}

std::string Router::rewrite_files(const NodePtr& n, std::string body) {
  // Download links name the node's own address; through the router they
  // name the router and the node's tag, and download() forwards them.
  auto j = parse_json(body, JsonLimits{o_.max_reply, 32, 1 << 20});
  if (!j) return body;
  auto* files = j->get("files");
  if (!files || !files->is(JsonValue::Type::array)) return body;
  for (const auto& f : files->items()) {
    auto* u = f.get("url");
    if (!u || !u->string()) continue;
    std::string url(*u->string());
    auto pos = url.find("/files/");
    if (pos == std::string::npos) continue;
    std::string fresh = o_.base_url + "/files/n" + n->tag + "-" + url.substr(pos + 7);
    auto from = json_string(url);
    if (auto at = body.find(from); at != std::string::npos) body.replace(at, from.size(), json_string(fresh));
  }
  return body;
}

void Router::session_create(const httplib::Request& req, httplib::Response& res) {
  std::string why;
  auto shape = run_shape(req, o_.max_body, &why);
  if (!shape) return fail(res, false, 400, ErrorCode::invalid_argument, why);
  auto order = placement(shape->key);
  if (order.empty()) {
    ++no_node_;
    return fail(res, false, 503, ErrorCode::communication, "no sandboxd node is ready");
  }
  offer(order, req, "/v1/sessions", o_.max_body, res, false, "opening the session", [&](const NodePtr& n, Reply& r) {
    if (r.status == 201) {
      auto j = parse_json(r.body, JsonLimits{o_.max_body, 8, 1024});
      auto* id = j ? j->get("session") : nullptr;
      auto s = id ? id->string() : std::nullopt;
      if (!s || s->empty() || s->size() > kMaxNodeSessionId || !parse_routed_session(routed_session_id(n->tag, *s)))
        return fail(res, false, 502, ErrorCode::communication, "node " + n->tag + " answered no session id");
      std::string node_id(*s);
      auto from = json_string(node_id);
      if (auto at = r.body.find(from); at != std::string::npos)
        r.body.replace(at, from.size(), json_string(routed_session_id(n->tag, node_id)));
    }
    relay(res, n, r);
  });
}

void Router::session_list(const httplib::Request& req, httplib::Response& res) {
  std::vector<NodePtr> all;
  {
    std::lock_guard lock(mu_);
    for (const auto& [tag, n] : nodes_)
      if (n->up) all.push_back(n);  // draining nodes still hold sessions
  }
  std::string out;
  for (const auto& n : all) {
    auto r = send(n, "GET", "/v1/sessions", req, "", o_.max_body);
    if (!r.complete || r.status != 200) continue;  // a node that cannot answer has no sessions to show
    auto j = parse_json(r.body, JsonLimits{o_.max_body, 8, 65536});
    auto* list = j ? j->get("sessions") : nullptr;
    if (!list || !list->is(JsonValue::Type::array)) continue;
    auto open = r.body.find('['), close = r.body.rfind(']');
    if (open == std::string::npos || close == std::string::npos || close <= open) continue;
    std::string inner = r.body.substr(open + 1, close - open - 1);
    for (const auto& s : list->items()) {
      auto* id = s.get("session");
      if (!id || !id->string() || id->string()->size() > kMaxNodeSessionId) continue;
      std::string from = "\"session\":" + json_string(*id->string());
      if (auto at = inner.find(from); at != std::string::npos)
        inner.replace(at, from.size(), "\"session\":" + json_string(routed_session_id(n->tag, *id->string())));
    }
    if (inner.find_first_not_of(" \n\t") == std::string::npos) continue;
    out += (out.empty() ? "" : ",") + inner;
  }
  res.set_content("{\"sessions\":[" + out + "]}", "application/json");
}

void Router::session_call(const httplib::Request& req, httplib::Response& res) {
  std::string id = req.matches[1];
  auto routed = parse_routed_session(id);
  if (!routed) return fail(res, false, 404, ErrorCode::not_found, "no session '" + id + "'");
  auto n = by_tag(routed->tag);
  bool up = false;
  if (n) {
    std::lock_guard lock(mu_);
    up = n->up;
  }
  // A node that is gone took its sessions with it: say so at once, never wait for it.
  auto closed = [&](const std::string& why) {
    if (n) res.set_header("X-Sandbox-Node", n->tag);
    fail(res, false, 410, ErrorCode::session_closed, "session '" + id + "' is closed: " + why);
  };
  if (!n) return closed("its node is no longer known");
  if (!up) return closed("its node " + n->tag + " is not answering");
  const std::string prefix = "/v1/sessions/";
  std::string path = prefix + routed->node_session + url_escape(std::string_view(req.path).substr(prefix.size() + id.size()), true);
  if (!req.params.empty()) {
    std::string q;
    for (const auto& [k, v] : req.params) q += (q.empty() ? "?" : "&") + url_escape(k, false) + "=" + url_escape(v, false);
    path += q;
  }
  auto r = send(n, req.method, path, req, req.body, o_.max_reply);
  if (!r.connected) {
    ++n->failures;
    mark_down(n, "forwarding: " + r.error);
    return closed("its node " + n->tag + " cannot be reached");
  }
  if (!r.complete) {
    ++n->failures;
    return closed("its node " + n->tag + " failed during the call: " + r.error);
  }
  // The node's gateway lost its daemon (502): the daemon's sessions died with it.
  if (r.status == 502 && r.body.find("\"communication\"") != std::string::npos) {
    ++n->failures;
    return closed("its node " + n->tag + " lost its daemon");
  }
  relay(res, n, r);
}

void Router::download(const httplib::Request& req, httplib::Response& res) {
  auto n = by_tag(req.matches[1]);
  if (!n) return fail(res, false, 404, ErrorCode::not_found, "no such file, or its link expired");
  std::string path = "/files/" + req.matches[2].str() + url_escape(req.matches[3].str(), true);
  auto r = send(n, "GET", path, req, "", o_.max_reply);
  if (!r.complete) return fail(res, false, 404, ErrorCode::not_found, "no such file: its node cannot be reached");
  relay(res, n, r);
}

void Router::health(const httplib::Request&, httplib::Response& res) {
  std::string nodes;
  size_t ready = 0;
  {
    std::lock_guard lock(mu_);
    for (const auto& [tag, n] : nodes_) {
      if (n->up && !n->draining) ++ready;
      nodes += std::string(nodes.empty() ? "" : ",") + "{\"node\":" + json_string(tag) +
               ",\"address\":" + json_string(n->address) + ",\"up\":" + (n->up ? "true" : "false") +
               ",\"draining\":" + (n->draining ? "true" : "false") +
               ",\"in_flight\":" + std::to_string(n->in_flight.load()) +
               ",\"load\":" + std::to_string(n->reported) + ",\"sessions\":" + std::to_string(n->sessions) +
               ",\"error\":" + (n->last_error.empty() ? "null" : json_string(n->last_error)) + "}";
    }
  }
  res.status = ready ? 200 : 503;
  res.set_content("{\"status\":" + json_string(ready ? "ok" : "unavailable") + ",\"role\":\"router\",\"version\":" +
                      json_string(PROJECT_VERSION) + ",\"ready\":" + std::to_string(ready) + ",\"nodes\":[" + nodes + "]}",
                  "application/json");
}

void Router::metrics(const httplib::Request& req, httplib::Response& res) {
  if (!o_.metrics_public && !is_loopback(req.remote_addr)) {
    res.status = 403;
    res.set_content("metrics are served to loopback only (--metrics-public to change)\n", "text/plain");
    return;
  }
  std::string t;
  auto family = [&](const char* name, const char* type, const char* help) {
    t += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  std::lock_guard lock(mu_);
  auto per_node = [&](const char* name, const char* type, const char* help, auto value) {
    family(name, type, help);
    for (const auto& [tag, n] : nodes_)
      t += std::string(name) + "{node=\"" + tag + "\",address=\"" + label(n->address) + "\"} " + std::to_string(value(*n)) + "\n";
  };
  per_node("sandbox_router_placements_total", "counter", "Runs and sessions a node took.",
           [](const Node& n) { return n.placements.load(); });
  per_node("sandbox_router_node_failures_total", "counter",
           "Requests a node failed: unreachable, cut off, or its gateway lost its daemon.",
           [](const Node& n) { return n.failures.load(); });
  per_node("sandbox_router_node_up", "gauge", "Whether the node answers /health as ready.",
           [](const Node& n) { return n.up ? 1 : 0; });
  per_node("sandbox_router_node_draining", "gauge", "Whether the node is draining (takes no new work).",
           [](const Node& n) { return n.draining ? 1 : 0; });
  per_node("sandbox_router_drains_seen_total", "counter", "Times the node was seen to start draining.",
           [](const Node& n) { return n.drains_seen; });
  per_node("sandbox_router_node_load", "gauge", "Runs active and queued on the node at its last poll.",
           [](const Node& n) { return n.reported; });
  per_node("sandbox_router_node_sessions", "gauge", "Open sessions on the node at its last poll.",
           [](const Node& n) { return n.sessions; });
  per_node("sandbox_router_node_in_flight", "gauge", "Requests this router has on the node now.",
           [](const Node& n) { return n.in_flight.load(); });
  family("sandbox_router_retries_total", "counter", "Placements retried on another node (capacity or unreachable).");
  t += "sandbox_router_retries_total " + std::to_string(retries_.load()) + "\n";
  family("sandbox_router_no_node_total", "counter", "Requests answered without any node (none ready or reachable).");
  t += "sandbox_router_no_node_total " + std::to_string(no_node_.load()) + "\n";
  family("sandbox_router_srv_failures_total", "counter", "SRV look-ups that failed (the last answer was kept).");
  t += "sandbox_router_srv_failures_total " + std::to_string(srv_failures_.load()) + "\n";
  family("sandbox_router_requests_total", "counter", "HTTP requests by route and status.");
  for (const auto& [k, n] : requests_)
    t += "sandbox_router_requests_total{route=\"" + k.first + "\",status=\"" + std::to_string(k.second) + "\"} " +
         std::to_string(n) + "\n";
  res.set_content(t, "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace

int serve_router(RouterOptions options) {
  httplib::Server server;
  configure_server(server, options.threads, std::max(options.max_body, options.max_upload));
  Router router(options);
  router.routes(server);
  int port = bind_server(server, options.host, options.port, "sandbox-router");
  if (port < 0) return 1;
  router.set_port(port);
  router.start();
  std::fprintf(stderr, "sandbox-router: listening on %s:%d\n", options.host.c_str(), port);
  bool ok = server.listen_after_bind();
  router.stop();
  return ok ? 0 : 1;
}

}  // namespace sandbox::gateway
