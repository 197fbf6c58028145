#include "daemon/dbus.h"

#include <poll.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include <sandbox/limits.h>

#include "daemon/dbus_call.h"
#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

int set_error(sd_bus_error* error, ErrorCode code, const std::string& message) {
  return sd_bus_error_set(error, dbus_error_name(code).c_str(), message.c_str());
}

int invalid(sd_bus_error* error, const std::string& message) {
  return set_error(error, ErrorCode::invalid_argument, message);
}

// The a{sv} options of the methods; each method names the keys it takes.
struct Options {
  std::optional<uint32_t> timeout_ms, memory_mb, idle_timeout_ms;
  EnvList env;
  NetworkRequest net;
  std::vector<std::string> packages;
  bool stream = false;
  uint64_t request = 0;
};

int read_options(sd_bus_message* m, const std::vector<std::string_view>& allowed, Options* o, sd_bus_error* error) {
  int r = sd_bus_message_enter_container(m, 'a', "{sv}");
  if (r < 0) return r;
  while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
    const char* key = nullptr;
    if ((r = sd_bus_message_read(m, "s", &key)) < 0) return r;
    std::string k = key;
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      std::string names;
      for (const auto& a : allowed) names += (names.empty() ? "" : ", ") + std::string(a);
      return invalid(error, "unknown option '" + k.substr(0, 64) + "' (" + names + ")");
    }
    const char* contents = nullptr;
    if ((r = sd_bus_message_peek_type(m, nullptr, &contents)) < 0) return r;
    std::string type = contents ? contents : "";
    auto want = [&](const char* t) { return type == t ? 0 : invalid(error, "option '" + k + "' must be of type " + t); };
    if (k == "timeout_ms" || k == "memory_mb" || k == "idle_timeout_ms") {
      if ((r = want("u")) < 0) return r;
      uint32_t v = 0;
      if ((r = sd_bus_message_read(m, "v", "u", &v)) < 0) return r;
      (k == "timeout_ms" ? o->timeout_ms : k == "memory_mb" ? o->memory_mb : o->idle_timeout_ms) = v;
    } else if (k == "stream") {
      if ((r = want("b")) < 0) return r;
      int v = 0;
      if ((r = sd_bus_message_read(m, "v", "b", &v)) < 0) return r;
      o->stream = v != 0;
    } else if (k == "request") {
      if ((r = want("t")) < 0) return r;
      if ((r = sd_bus_message_read(m, "v", "t", &o->request)) < 0) return r;
    } else if (k == "network") {
      if ((r = want("b")) < 0) return r;
      int v = 0;
      if ((r = sd_bus_message_read(m, "v", "b", &v)) < 0) return r;
      o->net.network = v != 0;
    } else if (k == "allowed_domains") {
      if ((r = want("as")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'v', "as")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'a', "s")) < 0) return r;
      const char* d = nullptr;
      while ((r = sd_bus_message_read(m, "s", &d)) > 0) {
        if (o->net.allowed_domains.size() >= limits::kMaxAllowedDomains)
          return invalid(error, "more than " + std::to_string(limits::kMaxAllowedDomains) + " allowed domains");
        o->net.allowed_domains.emplace_back(d);
      }
      if (r < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
    } else if (k == "packages") {
      if ((r = want("as")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'v', "as")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'a', "s")) < 0) return r;
      const char* p = nullptr;
      while ((r = sd_bus_message_read(m, "s", &p)) > 0) {
        if (o->packages.size() >= limits::kMaxPackages)
          return invalid(error, "more than " + std::to_string(limits::kMaxPackages) + " packages");
        o->packages.emplace_back(p);
      }
      if (r < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
    } else if (k == "expose_ports") {
      // (guest port, host port; 0 picks one)
      if ((r = want("a(uu)")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'v', "a(uu)")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'a', "(uu)")) < 0) return r;
      uint32_t in = 0, ext = 0;
      while ((r = sd_bus_message_read(m, "(uu)", &in, &ext)) > 0) {
        if (o->net.expose_ports.size() >= limits::kMaxExposedPorts)
          return invalid(error, "more than " + std::to_string(limits::kMaxExposedPorts) + " exposed ports");
        o->net.expose_ports.push_back({in, ext});
      }
      if (r < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
    } else if (k == "expose_unix") {
      // Guest ports offered as Unix sockets owned by the caller's uid.
      if ((r = want("au")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'v', "au")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'a', "u")) < 0) return r;
      uint32_t in = 0;
      while ((r = sd_bus_message_read(m, "u", &in)) > 0) {
        if (o->net.expose_ports.size() >= limits::kMaxExposedPorts)
          return invalid(error, "more than " + std::to_string(limits::kMaxExposedPorts) + " exposed ports");
        o->net.expose_ports.push_back({in, 0, true});
      }
      if (r < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
    } else if (k == "env") {
      if ((r = want("a{ss}")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'v', "a{ss}")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'a', "{ss}")) < 0) return r;
      const char *name, *value;
      while ((r = sd_bus_message_read(m, "{ss}", &name, &value)) > 0) {
        if (o->env.size() >= limits::kMaxEnvVars)
          return invalid(error, "more than " + std::to_string(limits::kMaxEnvVars) + " environment variables");
        o->env.emplace_back(name, value);
      }
      if (r < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
      if ((r = sd_bus_message_exit_container(m)) < 0) return r;
    }
    if ((r = sd_bus_message_exit_container(m)) < 0) return r;
  }
  if (r < 0) return r;
  return sd_bus_message_exit_container(m);
}

int read_language(const char* name, Language* out, sd_bus_error* error) {
  auto lang = schema::EnumNames<Language>::parse(name);
  if (!lang) return invalid(error, std::string("unknown language '") + std::string(name).substr(0, 64) +
                                       "' (python, javascript, raw)");
  *out = *lang;
  return 0;
}

constexpr Method kMethods[] = {
    {"Run", Method::Kind::run},           {"CreateSession", Method::Kind::create},
    {"SessionExec", Method::Kind::exec},  {"CloseSession", Method::Kind::close},
    {"ListSessions", Method::Kind::list}, {"Metrics", Method::Kind::metrics},
    {"SetSessionNetwork", Method::Kind::network}, {"Drain", Method::Kind::drain},
};

const sd_bus_vtable kVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("Run", "ssa{sv}", SD_BUS_PARAM(language) SD_BUS_PARAM(code) SD_BUS_PARAM(options),
                             "iayaya{sv}",
                             SD_BUS_PARAM(exit_code) SD_BUS_PARAM(stdout) SD_BUS_PARAM(stderr) SD_BUS_PARAM(details),
                             DbusService::on_method, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("CreateSession", "sa{sv}", SD_BUS_PARAM(language) SD_BUS_PARAM(options), "s",
                             SD_BUS_PARAM(session), DbusService::on_method, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("SessionExec", "ssa{sv}", SD_BUS_PARAM(session) SD_BUS_PARAM(code) SD_BUS_PARAM(options),
                             "iayaya{sv}",
                             SD_BUS_PARAM(exit_code) SD_BUS_PARAM(stdout) SD_BUS_PARAM(stderr) SD_BUS_PARAM(details),
                             DbusService::on_method, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("CloseSession", "s", SD_BUS_PARAM(session), "", , DbusService::on_method,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("ListSessions", "", , "a(ssuutt)", SD_BUS_PARAM(sessions), DbusService::on_method,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Metrics", "", , "s", SD_BUS_PARAM(text), DbusService::on_method,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("SetSessionNetwork", "sasb",
                             SD_BUS_PARAM(session) SD_BUS_PARAM(allowed_domains) SD_BUS_PARAM(network), "", ,
                             DbusService::on_method, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Drain", "u", SD_BUS_PARAM(deadline_ms), "b", SD_BUS_PARAM(draining),
                             DbusService::on_method, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_PROPERTY("Version", "s", DbusService::on_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Accelerator", "s", DbusService::on_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("AcceleratorReason", "s", DbusService::on_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("HostLimits", "s", DbusService::on_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("VMs", "u", DbusService::on_property, 0, 0),
    SD_BUS_PROPERTY("MaxVMs", "u", DbusService::on_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("RunsActive", "u", DbusService::on_property, 0, 0),
    SD_BUS_PROPERTY("RunsQueued", "u", DbusService::on_property, 0, 0),
    SD_BUS_PROPERTY("Pool", "a(suuutt)", DbusService::on_property, 0, 0),
    SD_BUS_PROPERTY("Draining", "b", DbusService::on_property, 0, 0),
    SD_BUS_SIGNAL_WITH_NAMES("Output", "tsay", SD_BUS_PARAM(request) SD_BUS_PARAM(stream) SD_BUS_PARAM(data), 0),
    SD_BUS_VTABLE_END,
};

// Never let an exception cross the C library.
template <class Fn>
int guarded(sd_bus_error* error, Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return set_error(error, ErrorCode::internal, e.what());
  }
}

}  // namespace

std::string dbus_error_name(ErrorCode code) {
  std::string name = "org.sandboxd1.Error.";
  bool upper = true;
  for (char c : error_code_name(code)) {
    if (c == '_') {
      upper = true;
      continue;
    }
    name.push_back(upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c);
    upper = false;
  }
  // Acronyms read better whole.
  if (auto p = name.find("Vm"); p != std::string::npos) name.replace(p, 2, "VM");
  return name;
}

DbusService::DbusService(uv_loop_t* loop, Service& service) : loop_(loop), service_(service), later_(loop) {}

DbusService::~DbusService() { stop(); }

int DbusService::on_method(sd_bus_message* m, void* userdata, sd_bus_error* error) {
  return guarded(error, [&] { return static_cast<DbusService*>(userdata)->method(m, error); });
}

int DbusService::on_property(sd_bus*, const char*, const char*, const char* property, sd_bus_message* reply,
                             void* userdata, sd_bus_error* error) {
  return guarded(error, [&] { return static_cast<DbusService*>(userdata)->property(property, reply, error); });
}

Result<void> DbusService::start(const std::string& address) {
  int r;
  if (address == "system") {
    r = sd_bus_open_system(bus_.out());
  } else {
    r = sd_bus_new(bus_.out());
    if (r >= 0) r = sd_bus_set_address(bus_.get(), address.c_str());
    if (r >= 0) r = sd_bus_set_bus_client(bus_.get(), 1);
    if (r >= 0) r = sd_bus_start(bus_.get());
  }
  if (r < 0) {
    stop();
    return Error::sys("connecting to D-Bus", address, -r);
  }
  r = sd_bus_add_object_vtable(bus_.get(), slot_.out(), kObjectPath, kInterface, kVtable, this);
  if (r >= 0) r = sd_bus_request_name(bus_.get(), kBusName, 0);
  if (r < 0) {
    stop();
    return Error::sys("registering", kBusName, -r);
  }
  poll_ = UvHandle<uv_poll_t>::make(this, [&](uv_poll_t* p) { return uv_poll_init(loop_, p, sd_bus_get_fd(bus_.get())); });
  timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop_, t); });
  if (!poll_ || !timer_) {
    stop();
    return Error::make(ErrorCode::internal, "cannot create event handles for D-Bus");
  }
  process();
  return ok();
}

void DbusService::stop() {
  // Calls still in flight get no reply; what they run is cancelled.
  calls_.clear();
  later_.run();
  poll_.reset();
  timer_.reset();
  slot_.reset();
  bus_.reset();
}

void DbusService::process() {
  if (!bus_) return;
  for (;;) {
    status_.reset();
    int r = sd_bus_process(bus_.get(), nullptr);
    if (r < 0) {
      log_warning(std::string("D-Bus: ") + std::strerror(-r) + "; the bus interface is off");
      stop();
      return;
    }
    if (r == 0) break;
  }
  status_.reset();
  rearm();
}

void DbusService::rearm() {
  if (!bus_ || !poll_) return;
  int events = sd_bus_get_events(bus_.get());
  int uv_events = (events & POLLIN ? UV_READABLE : 0) | (events & POLLOUT ? UV_WRITABLE : 0);
  uv_poll_start(poll_.get(), uv_events ? uv_events : UV_READABLE, [](uv_poll_t* p, int, int) {
    if (auto* self = owner_of<DbusService>(p)) self->process();
  });
  uint64_t until_usec = 0;
  if (sd_bus_get_timeout(bus_.get(), &until_usec) >= 0 && until_usec != UINT64_MAX) {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t now_usec = static_cast<uint64_t>(now.tv_sec) * 1'000'000 + static_cast<uint64_t>(now.tv_nsec) / 1000;
    uint64_t delay_ms = until_usec > now_usec ? (until_usec - now_usec + 999) / 1000 : 0;
    uv_timer_start(timer_.get(), [](uv_timer_t* t) {
      if (auto* self = owner_of<DbusService>(t)) self->process();
    }, delay_ms, 0);
  } else {
    uv_timer_stop(timer_.get());
  }
}

void DbusService::finished(DbusCall* call) {
  auto it = calls_.find(call);
  if (it == calls_.end()) return;
  // Destroyed on a later loop turn: we may be inside its own method.
  std::shared_ptr<DbusCall> keep = std::move(it->second);
  calls_.erase(it);
  later_.post([keep]() mutable { keep.reset(); });
}

int DbusService::identify(sd_bus_message* m, Caller* out, sd_bus_error* error) {
  // The uid comes from the bus itself. Groups are not taken from the
  // sender's own claims (augmented credentials read /proc/PID, which a
  // process can change by exec'ing a setgid program): the service derives
  // them from the uid.
  CredsRef creds;
  int r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_PID, creds.out());
  uid_t uid = 0;
  if (r >= 0) r = sd_bus_creds_get_euid(creds.get(), &uid);
  if (r < 0) return set_error(error, ErrorCode::permission_denied, "cannot identify the caller");
  Caller caller;
  caller.uid = uid;
  pid_t pid = 0;
  if (sd_bus_creds_get_pid(creds.get(), &pid) >= 0) caller.pid = pid;
  if (auto a = service_.authorize(caller, std::nullopt); !a) {
    log_warning("D-Bus: refused " + std::string(sd_bus_message_get_member(m)) + " from uid " + std::to_string(uid));
    return set_error(error, a.error().code, a.error().message);
  }
  *out = caller;
  return 0;
}

namespace {

// The request a method call stands for; the options it carried in *o.
int read_request(Method::Kind kind, sd_bus_message* m, uint64_t id, proto::Message* out, Options* o,
                 sd_bus_error* error) {
  int r = 0;
  switch (kind) {
    case Method::Kind::run: {
      const char *language = nullptr, *code = nullptr;
      if ((r = sd_bus_message_read(m, "ss", &language, &code)) < 0) return r;
      RunRequest req;
      if ((r = read_language(language, &req.language, error)) < 0) return r;
      if ((r = read_options(m, {"timeout_ms", "memory_mb", "env", "stream", "request", "network", "allowed_domains",
                                "expose_ports", "expose_unix", "packages"},
                            o, error)) < 0)
        return r;
      req.code = code;
      req.timeout = std::chrono::milliseconds(o->timeout_ms.value_or(0));
      req.memory_mb = o->memory_mb.value_or(0);
      req.env = std::move(o->env);
      req.net = std::move(o->net);
      req.packages = std::move(o->packages);
      *out = proto::Run{id, std::move(req)};
      return 0;
    }
    case Method::Kind::create: {
      const char* language = nullptr;
      if ((r = sd_bus_message_read(m, "s", &language)) < 0) return r;
      SessionOptions so;
      if ((r = read_language(language, &so.language, error)) < 0) return r;
      if ((r = read_options(m, {"timeout_ms", "memory_mb", "idle_timeout_ms", "env", "network", "allowed_domains",
                                "expose_ports", "expose_unix", "packages"},
                            o, error)) < 0)
        return r;
      so.timeout = std::chrono::milliseconds(o->timeout_ms.value_or(0));
      so.memory_mb = o->memory_mb.value_or(0);
      so.idle_timeout = std::chrono::milliseconds(o->idle_timeout_ms.value_or(0));
      so.env = std::move(o->env);
      so.net = std::move(o->net);
      so.packages = std::move(o->packages);
      *out = proto::SessionCreate{id, std::move(so)};
      return 0;
    }
    case Method::Kind::exec: {
      const char *session = nullptr, *code = nullptr;
      if ((r = sd_bus_message_read(m, "ss", &session, &code)) < 0) return r;
      if ((r = read_options(m, {"timeout_ms", "stream", "request"}, o, error)) < 0) return r;
      *out = proto::SessionExec{id, session, code, o->timeout_ms.value_or(0)};
      return 0;
    }
    case Method::Kind::close: {
      const char* session = nullptr;
      if ((r = sd_bus_message_read(m, "s", &session)) < 0) return r;
      *out = proto::SessionClose{id, session};
      return 0;
    }
    case Method::Kind::list:
      *out = proto::SessionListRequest{id};
      return 0;
    case Method::Kind::metrics:
      *out = proto::MetricsRequest{id};
      return 0;
    case Method::Kind::drain:
      return -EINVAL;  // answered at once by DbusService::drain
    case Method::Kind::network: {
      const char* session = nullptr;
      if ((r = sd_bus_message_read(m, "s", &session)) < 0) return r;
      proto::SessionNetwork n{id, session, false, {}};
      if ((r = sd_bus_message_enter_container(m, 'a', "s")) < 0) return r;
      const char* d = nullptr;
      while ((r = sd_bus_message_read(m, "s", &d)) > 0) {
        if (n.allowed_domains.size() >= limits::kMaxAllowedDomains)
          return invalid(error, "more than " + std::to_string(limits::kMaxAllowedDomains) + " allowed domains");
        n.allowed_domains.emplace_back(d);
      }
      if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0) return r;
      int network = 0;
      if ((r = sd_bus_message_read(m, "b", &network)) < 0) return r;
      n.network = network != 0 || !n.allowed_domains.empty();
      *out = std::move(n);
      return 0;
    }
  }
  return -EINVAL;
}

}  // namespace

int DbusService::list_sessions(sd_bus_message* m, const Caller& caller, uint64_t id, sd_bus_error* error) {
  // The same request a socket client sends, answered at once.
  struct Capture : Sink {
    std::optional<proto::Message> reply;
    void deliver(proto::Message&& x) override { reply = std::move(x); }
  };
  auto capture = std::make_shared<Capture>();
  auto peer = service_.connect(caller, capture);
  service_.handle(*peer, proto::SessionListRequest{id});
  auto* list = capture->reply ? std::get_if<proto::SessionList>(&*capture->reply) : nullptr;
  if (!list) return set_error(error, ErrorCode::internal, "no session list");
  MessageRef reply;
  int r = sd_bus_message_new_method_return(m, reply.out());
  if (r >= 0) r = sd_bus_message_open_container(reply.get(), 'a', "(ssuutt)");
  for (const auto& s : list->sessions) {
    if (r < 0) break;
    r = sd_bus_message_append(reply.get(), "(ssuutt)", s.id.c_str(), std::string(language_name(s.language)).c_str(),
                              s.memory_mb, static_cast<uint32_t>(s.idle_timeout.count()), s.exec_count,
                              s.last_activity_unix_ms);
  }
  if (r >= 0) r = sd_bus_message_close_container(reply.get());
  if (r >= 0) r = sd_bus_send(bus_.get(), reply.get(), nullptr);
  return r < 0 ? r : 1;
}

int DbusService::metrics(sd_bus_message* m, const Caller& caller, uint64_t id, sd_bus_error* error) {
  struct Capture : Sink {
    std::optional<proto::Message> reply;
    void deliver(proto::Message&& x) override { reply = std::move(x); }
  };
  auto capture = std::make_shared<Capture>();
  auto peer = service_.connect(caller, capture);
  service_.handle(*peer, proto::MetricsRequest{id});
  auto* text = capture->reply ? std::get_if<proto::MetricsText>(&*capture->reply) : nullptr;
  if (!text) return set_error(error, ErrorCode::internal, "no metrics");
  return sd_bus_reply_method_return(m, "s", text->text.c_str());
}

int DbusService::drain(sd_bus_message* m, const Caller& caller, uint64_t id, sd_bus_error* error) {
  uint32_t deadline_ms = 0;
  if (int r = sd_bus_message_read(m, "u", &deadline_ms); r < 0) return r;
  struct Capture : Sink {
    std::optional<proto::Message> reply;
    void deliver(proto::Message&& x) override { reply = std::move(x); }
  };
  auto capture = std::make_shared<Capture>();
  auto peer = service_.connect(caller, capture);
  // Root only, as on the socket: the service decides.
  service_.handle(*peer, proto::Drain{id, deadline_ms});
  if (auto* e = capture->reply ? std::get_if<proto::ErrorReply>(&*capture->reply) : nullptr)
    return set_error(error, e->code, e->message);
  auto* st = capture->reply ? std::get_if<proto::Status>(&*capture->reply) : nullptr;
  if (!st) return set_error(error, ErrorCode::internal, "no status after the drain");
  status_.reset();
  return sd_bus_reply_method_return(m, "b", st->status.draining ? 1 : 0);
}

int DbusService::method(sd_bus_message* m, sd_bus_error* error) {
  const char* member = sd_bus_message_get_member(m);
  const Method* method = nullptr;
  for (const auto& k : kMethods)
    if (std::strcmp(k.name, member) == 0) method = &k;
  if (!method) return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_METHOD, "unknown method %s", member);
  Caller caller;
  int r = identify(m, &caller, error);
  if (r < 0) return r;
  uint64_t id = next_request_++;
  if (method->kind == Method::Kind::list) return list_sessions(m, caller, id, error);
  if (method->kind == Method::Kind::metrics) return metrics(m, caller, id, error);
  if (method->kind == Method::Kind::drain) return drain(m, caller, id, error);
  proto::Message request;
  Options o;
  if ((r = read_request(method->kind, m, id, &request, &o, error)) < 0) return r;
  auto call = std::make_shared<DbusCall>(this, m, method->kind, o.stream, o.request);
  calls_.emplace(call.get(), call);
  call->begin(caller, std::move(request));
  return 1;  // the reply is sent when the request ends
}

int DbusService::property(const char* name, sd_bus_message* reply, sd_bus_error* error) {
  if (!status_) status_ = service_.status();
  const auto& s = *status_;
  std::string p = name;
  if (p == "Version") return sd_bus_message_append(reply, "s", s.version.c_str());
  if (p == "Accelerator") return sd_bus_message_append(reply, "s", s.accelerator.c_str());
  if (p == "AcceleratorReason") return sd_bus_message_append(reply, "s", s.accelerator_reason.c_str());
  if (p == "HostLimits") return sd_bus_message_append(reply, "s", s.host_limits.c_str());
  if (p == "VMs") return sd_bus_message_append(reply, "u", s.vms);
  if (p == "MaxVMs") return sd_bus_message_append(reply, "u", s.max_vms);
  if (p == "RunsActive") return sd_bus_message_append(reply, "u", s.runs_active);
  if (p == "RunsQueued") return sd_bus_message_append(reply, "u", s.runs_queued);
  if (p == "Draining") return sd_bus_message_append(reply, "b", s.draining ? 1 : 0);
  if (p == "Pool") {
    int r = sd_bus_message_open_container(reply, 'a', "(suuutt)");
    for (const auto& e : s.pool) {
      if (r < 0) break;
      r = sd_bus_message_append(reply, "(suuutt)", std::string(language_name(e.language)).c_str(), e.target, e.ready,
                                e.booting, e.hits, e.misses);
    }
    if (r < 0) return r;
    return sd_bus_message_close_container(reply);
  }
  return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "unknown property %s", name);
}

}  // namespace sandbox::daemon
