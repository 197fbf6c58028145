#include "daemon/dbus.h"

#include <poll.h>
#include <time.h>

#include <algorithm>
#include <cstring>

#include "common/limits.h"
#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

// Owns an sd-bus reference.
struct MessageRef {
  sd_bus_message* m = nullptr;
  explicit MessageRef(sd_bus_message* msg = nullptr) : m(msg) {}
  MessageRef(const MessageRef&) = delete;
  MessageRef& operator=(const MessageRef&) = delete;
  ~MessageRef() { sd_bus_message_unref(m); }
};

int set_error(sd_bus_error* error, ErrorCode code, const std::string& message) {
  return sd_bus_error_set(error, dbus_error_name(code).c_str(), message.c_str());
}

int invalid(sd_bus_error* error, const std::string& message) {
  return set_error(error, ErrorCode::invalid_argument, message);
}

// The a{sv} options of the methods; each method names the keys it takes.
struct Options {
  uint32_t timeout_ms = 0;
  uint32_t memory_mb = 0;
  uint32_t idle_timeout_ms = 0;
  proto::EnvList env;
  bool stream = false;
  uint64_t request = 0;
};

// Reads a{sv} options; keys outside `allowed` and wrong types are errors.
int read_options(sd_bus_message* m, const std::vector<std::string>& allowed, Options* o, sd_bus_error* error) {
  auto* req = o;
  auto* stream = &o->stream;
  auto* request = &o->request;
  int r = sd_bus_message_enter_container(m, 'a', "{sv}");
  if (r < 0) return r;
  while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
    const char* key = nullptr;
    if ((r = sd_bus_message_read(m, "s", &key)) < 0) return r;
    std::string k = key;
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      std::string names;
      for (const auto& a : allowed) names += (names.empty() ? "" : ", ") + a;
      return invalid(error, "unknown option '" + k + "' (" + names + ")");
    }
    const char* contents = nullptr;
    if ((r = sd_bus_message_peek_type(m, nullptr, &contents)) < 0) return r;
    std::string type = contents ? contents : "";
    auto want = [&](const char* t) { return type == t ? 0 : invalid(error, "option '" + k + "' must be of type " + t); };
    if (k == "timeout_ms" || k == "memory_mb" || k == "idle_timeout_ms") {
      if ((r = want("u")) < 0) return r;
      uint32_t v = 0;
      if ((r = sd_bus_message_read(m, "v", "u", &v)) < 0) return r;
      (k == "timeout_ms" ? req->timeout_ms : k == "memory_mb" ? req->memory_mb : req->idle_timeout_ms) = v;
    } else if (k == "stream") {
      if ((r = want("b")) < 0) return r;
      int v = 0;
      if ((r = sd_bus_message_read(m, "v", "b", &v)) < 0) return r;
      *stream = v != 0;
    } else if (k == "request") {
      if ((r = want("t")) < 0) return r;
      if ((r = sd_bus_message_read(m, "v", "t", request)) < 0) return r;
    } else if (k == "env") {
      if ((r = want("a{ss}")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'v', "a{ss}")) < 0) return r;
      if ((r = sd_bus_message_enter_container(m, 'a', "{ss}")) < 0) return r;
      const char *name, *value;
      while ((r = sd_bus_message_read(m, "{ss}", &name, &value)) > 0) {
        if (req->env.size() >= limits::kMaxEnvVars)
          return invalid(error, "more than " + std::to_string(limits::kMaxEnvVars) + " environment variables");
        req->env.emplace_back(name, value);
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

const sd_bus_vtable kVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("Run", "ssa{sv}", SD_BUS_PARAM(language) SD_BUS_PARAM(code) SD_BUS_PARAM(options),
                             "iayaya{sv}",
                             SD_BUS_PARAM(exit_code) SD_BUS_PARAM(stdout) SD_BUS_PARAM(stderr) SD_BUS_PARAM(details),
                             DbusService::on_run_thunk, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("CreateSession", "sa{sv}", SD_BUS_PARAM(language) SD_BUS_PARAM(options), "s",
                             SD_BUS_PARAM(session), DbusService::on_create_session_thunk, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("SessionExec", "ssa{sv}", SD_BUS_PARAM(session) SD_BUS_PARAM(code) SD_BUS_PARAM(options),
                             "iayaya{sv}",
                             SD_BUS_PARAM(exit_code) SD_BUS_PARAM(stdout) SD_BUS_PARAM(stderr) SD_BUS_PARAM(details),
                             DbusService::on_session_exec_thunk, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("CloseSession", "s", SD_BUS_PARAM(session), "", , DbusService::on_close_session_thunk,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("ListSessions", "", , "a(ssuutt)", SD_BUS_PARAM(sessions),
                             DbusService::on_list_sessions_thunk, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_PROPERTY("Version", "s", DbusService::on_property_thunk, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Accelerator", "s", DbusService::on_property_thunk, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("AcceleratorReason", "s", DbusService::on_property_thunk, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("HostLimits", "s", DbusService::on_property_thunk, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("VMs", "u", DbusService::on_property_thunk, 0, 0),
    SD_BUS_PROPERTY("MaxVMs", "u", DbusService::on_property_thunk, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("RunsActive", "u", DbusService::on_property_thunk, 0, 0),
    SD_BUS_PROPERTY("RunsQueued", "u", DbusService::on_property_thunk, 0, 0),
    SD_BUS_PROPERTY("Pool", "a(suuutt)", DbusService::on_property_thunk, 0, 0),
    SD_BUS_SIGNAL_WITH_NAMES("Output", "tsay", SD_BUS_PARAM(request) SD_BUS_PARAM(stream) SD_BUS_PARAM(data), 0),
    SD_BUS_VTABLE_END,
};

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

// One call in flight (Run, CreateSession, SessionExec, CloseSession): it
// answers the caller when the manager does, and streams output as unicast
// signals to the caller alone.
class DbusCall : public RunObserver {
 public:
  enum class Kind { run, create, exec, close };
  DbusCall(DbusService* service, sd_bus_message* call, Kind kind, bool stream, uint64_t request)
      : service_(service), call_(sd_bus_message_ref(call)), kind_(kind), stream_(stream), request_(request) {
    if (const char* s = sd_bus_message_get_sender(call)) sender_ = s;
  }

  void on_output(uint64_t, proto::Stream stream, std::string_view data) override {
    if (!stream_ || sender_.empty() || done_) return;
    sd_bus_message* raw = nullptr;
    if (sd_bus_message_new_signal(service_->bus_, &raw, kObjectPath, kInterface, "Output") < 0) return;
    MessageRef sig(raw);
    if (sd_bus_message_set_destination(raw, sender_.c_str()) < 0 ||
        sd_bus_message_append(raw, "ts", request_, std::string(proto::stream_name(stream)).c_str()) < 0 ||
        sd_bus_message_append_array(raw, 'y', data.data(), data.size()) < 0)
      return;
    sd_bus_send(service_->bus_, raw, nullptr);
    service_->rearm();
  }

  void on_result(proto::RunResult r) override {
    if (done_) return;
    done_ = true;
    sd_bus_message* raw = nullptr;
    int rc = sd_bus_message_new_method_return(call_.m, &raw);
    MessageRef reply(raw);
    if (rc >= 0) rc = sd_bus_message_append(raw, "i", r.exit_code);
    if (rc >= 0) rc = sd_bus_message_append_array(raw, 'y', r.stdout_data.data(), r.stdout_data.size());
    if (rc >= 0) rc = sd_bus_message_append_array(raw, 'y', r.stderr_data.data(), r.stderr_data.size());
    if (rc >= 0) rc = sd_bus_message_open_container(raw, 'a', "{sv}");
    auto u = [&](const char* k, uint64_t v) {
      if (rc >= 0) rc = sd_bus_message_append(raw, "{sv}", k, "t", v);
    };
    auto b = [&](const char* k, bool v) {
      if (rc >= 0) rc = sd_bus_message_append(raw, "{sv}", k, "b", static_cast<int>(v));
    };
    if (rc >= 0) rc = sd_bus_message_append(raw, "{sv}", "signal", "i", r.signal);
    b("timed_out", r.timed_out);
    b("stdout_truncated", r.stdout_truncated);
    b("stderr_truncated", r.stderr_truncated);
    u("execution_time_ms", r.execution_time_ms);
    u("cpu_time_ms", r.cpu_time_ms);
    u("memory_peak_mb", r.memory_peak_mb);
    u("setup_ms", r.timing.setup_ms);
    u("boot_ms", r.timing.boot_ms);
    u("execute_ms", r.timing.execute_ms);
    u("total_ms", r.timing.total_ms);
    b("warm_pool_hit", r.warm_pool_hit);
    if (rc >= 0) rc = sd_bus_message_append(raw, "{sv}", "accelerator", "s", r.accelerator.c_str());
    if (rc >= 0) rc = sd_bus_message_append(raw, "{sv}", "vm_start", "s", r.vm_start.c_str());
    if (kind_ == Kind::exec) b("state_lost", r.state_lost);
    u("request", request_);
    if (rc >= 0) rc = sd_bus_message_close_container(raw);
    if (rc >= 0) rc = sd_bus_send(service_->bus_, raw, nullptr);
    if (rc < 0) log_warning(std::string("D-Bus: cannot send a Run reply: ") + std::strerror(-rc));
    finish();
  }

  // A session opened (its info) or closed (an Ack).
  void on_reply(proto::Message m) override {
    if (done_) return;
    auto* list = std::get_if<proto::SessionList>(&m);
    if (kind_ == Kind::create && list && list->sessions.size() == 1) {
      done_ = true;
      int rc = sd_bus_reply_method_return(call_.m, "s", list->sessions[0].session.c_str());
      if (rc < 0) log_warning(std::string("D-Bus: cannot send a CreateSession reply: ") + std::strerror(-rc));
      return finish();
    }
    if (kind_ == Kind::close && std::holds_alternative<proto::Ack>(m)) {
      done_ = true;
      sd_bus_reply_method_return(call_.m, "");
      return finish();
    }
    on_error(proto::ErrorReply{0, ErrorCode::internal, "unexpected reply to a D-Bus call"});
  }
  void on_error(proto::ErrorReply e) override {
    if (done_) return;
    done_ = true;
    sd_bus_error err = SD_BUS_ERROR_NULL;
    sd_bus_error_set(&err, dbus_error_name(e.code).c_str(), e.message.c_str());
    sd_bus_reply_method_error(call_.m, &err);
    sd_bus_error_free(&err);
    finish();
  }

  void set_run(Manager::RunId id) { run_ = id; }
  Manager::RunId run() const { return run_; }

 private:
  void finish() {
    service_->rearm();
    service_->finished(this);
  }

  DbusService* service_;
  MessageRef call_;
  std::string sender_;
  Kind kind_;
  bool stream_;
  uint64_t request_;
  bool done_ = false;
  Manager::RunId run_ = 0;
};

DbusService::DbusService(uv_loop_t* loop, Manager& manager, AccessPolicy policy)
    : loop_(loop), manager_(manager), policy_(std::move(policy)) {}

DbusService::~DbusService() { stop(); }

namespace {

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

int DbusService::on_run_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error) {
  return guarded(error, [&] { return static_cast<DbusService*>(userdata)->run(m, error); });
}
int DbusService::on_create_session_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error) {
  return guarded(error, [&] { return static_cast<DbusService*>(userdata)->create_session(m, error); });
}
int DbusService::on_session_exec_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error) {
  return guarded(error, [&] { return static_cast<DbusService*>(userdata)->session_call(m, true, error); });
}
int DbusService::on_close_session_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error) {
  return guarded(error, [&] { return static_cast<DbusService*>(userdata)->session_call(m, false, error); });
}
int DbusService::on_list_sessions_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error) {
  return guarded(error, [&] { return static_cast<DbusService*>(userdata)->list_sessions(m, error); });
}

int DbusService::on_property_thunk(sd_bus*, const char*, const char*, const char* property, sd_bus_message* reply,
                                   void* userdata, sd_bus_error* error) {
  return guarded(error, [&] { return static_cast<DbusService*>(userdata)->property(property, reply, error); });
}

Result<void> DbusService::start(const std::string& address) {
  int r;
  if (address == "system") {
    r = sd_bus_open_system(&bus_);
  } else {
    r = sd_bus_new(&bus_);
    if (r >= 0) r = sd_bus_set_address(bus_, address.c_str());
    if (r >= 0) r = sd_bus_set_bus_client(bus_, 1);
    if (r >= 0) r = sd_bus_start(bus_);
  }
  if (r < 0) {
    stop();
    return Error::sys("connecting to D-Bus", address, -r);
  }
  r = sd_bus_add_object_vtable(bus_, &slot_, kObjectPath, kInterface, kVtable, this);
  if (r >= 0) r = sd_bus_request_name(bus_, kBusName, 0);
  if (r < 0) {
    stop();
    return Error::sys("registering", kBusName, -r);
  }
  poll_ = UvHandle<uv_poll_t>::make(this, [&](uv_poll_t* p) { return uv_poll_init(loop_, p, sd_bus_get_fd(bus_)); });
  timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop_, t); });
  reap_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop_, t); });
  if (!poll_ || !timer_ || !reap_) {
    stop();
    return Error::make(ErrorCode::internal, "cannot create event handles for D-Bus");
  }
  process();
  return ok();
}

void DbusService::stop() {
  // Calls still in flight get no reply; their runs are cancelled.
  for (auto& [raw, call] : calls_) manager_.cancel(call->run());
  calls_.clear();
  done_.clear();
  poll_.reset();
  timer_.reset();
  reap_.reset();
  slot_ = sd_bus_slot_unref(slot_);
  if (bus_) {
    sd_bus_flush(bus_);
    bus_ = sd_bus_flush_close_unref(bus_);
  }
}

void DbusService::process() {
  if (!bus_) return;
  for (;;) {
    int r = sd_bus_process(bus_, nullptr);
    if (r < 0) {
      log_warning(std::string("D-Bus: ") + std::strerror(-r) + "; the bus interface is off");
      stop();
      return;
    }
    if (r == 0) break;
  }
  rearm();
}

void DbusService::rearm() {
  if (!bus_ || !poll_) return;
  int events = sd_bus_get_events(bus_);
  int uv_events = (events & POLLIN ? UV_READABLE : 0) | (events & POLLOUT ? UV_WRITABLE : 0);
  uv_poll_start(poll_.get(), uv_events ? uv_events : UV_READABLE, [](uv_poll_t* p, int, int) {
    if (auto* self = owner_of<DbusService>(p)) self->process();
  });
  uint64_t until_usec = 0;
  if (sd_bus_get_timeout(bus_, &until_usec) >= 0 && until_usec != UINT64_MAX) {
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
  // Destroyed on the next loop turn: we may be inside its own method.
  done_.push_back(std::move(it->second));
  calls_.erase(it);
  uv_timer_start(reap_.get(), [](uv_timer_t* t) {
    if (auto* self = owner_of<DbusService>(t)) self->done_.clear();
  }, 0, 0);
}

int DbusService::authorize(sd_bus_message* m, Caller* out, sd_bus_error* error) {
  // Authorization equals the socket's: the sender's uid and groups.
  sd_bus_creds* creds = nullptr;
  int r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID | SD_BUS_CREDS_SUPPLEMENTARY_GIDS |
                                           SD_BUS_CREDS_PID | SD_BUS_CREDS_AUGMENT,
                                    &creds);
  Caller caller;
  std::vector<gid_t> groups;
  if (r >= 0) {
    uid_t uid;
    gid_t gid;
    pid_t pid;
    const gid_t* gids = nullptr;
    if (sd_bus_creds_get_euid(creds, &uid) < 0) r = -EPERM;
    if (r >= 0 && sd_bus_creds_get_egid(creds, &gid) >= 0) caller.gid = gid;
    if (r >= 0 && sd_bus_creds_get_pid(creds, &pid) >= 0) caller.pid = pid;
    int n = sd_bus_creds_get_supplementary_gids(creds, &gids);
    for (int i = 0; i < n; ++i) groups.push_back(gids[i]);
    if (r >= 0) caller.uid = uid;
  }
  sd_bus_creds_unref(creds);
  if (r < 0) return set_error(error, ErrorCode::permission_denied, "cannot identify the caller");
  if (!peer_allowed(policy_, caller, groups)) {
    log_warning("D-Bus: refused " + std::string(sd_bus_message_get_member(m)) + " from uid " + std::to_string(caller.uid));
    return set_error(error, ErrorCode::permission_denied,
                     "uid " + std::to_string(caller.uid) + " is not allowed to use sandboxd");
  }
  *out = caller;
  return 0;
}

namespace {

int read_language(const char* name, proto::Language* out, sd_bus_error* error) {
  auto lang = proto::language_from_name(name);
  if (!lang) return invalid(error, std::string("unknown language '") + name + "' (python, javascript, raw)");
  *out = *lang;
  return 0;
}

}  // namespace

int DbusService::run(sd_bus_message* m, sd_bus_error* error) {
  Caller caller;
  int r = authorize(m, &caller, error);
  if (r < 0) return r;
  const char *language = nullptr, *code = nullptr;
  if ((r = sd_bus_message_read(m, "ss", &language, &code)) < 0) return r;
  proto::RunRequest req;
  if ((r = read_language(language, &req.language, error)) < 0) return r;
  req.code = code;
  Options o;
  o.timeout_ms = limits::kDefaultTimeoutMs;
  o.memory_mb = limits::kDefaultMemoryMb;
  if ((r = read_options(m, {"timeout_ms", "memory_mb", "env", "stream", "request"}, &o, error)) < 0) return r;
  req.timeout_ms = o.timeout_ms;
  req.memory_mb = o.memory_mb;
  req.env = std::move(o.env);
  auto call = std::make_shared<DbusCall>(this, m, DbusCall::Kind::run, o.stream, o.request);
  auto id = manager_.run(caller, std::move(req), call);
  if (!id) return set_error(error, id.error().code, id.error().message);
  call->set_run(*id);
  calls_.emplace(call.get(), std::move(call));
  return 1;  // the reply is sent when the run ends
}

int DbusService::create_session(sd_bus_message* m, sd_bus_error* error) {
  Caller caller;
  int r = authorize(m, &caller, error);
  if (r < 0) return r;
  const char* language = nullptr;
  if ((r = sd_bus_message_read(m, "s", &language)) < 0) return r;
  proto::SessionCreate req;
  if ((r = read_language(language, &req.language, error)) < 0) return r;
  Options o;
  o.timeout_ms = limits::kDefaultTimeoutMs;
  o.memory_mb = limits::kDefaultMemoryMb;
  if ((r = read_options(m, {"timeout_ms", "memory_mb", "idle_timeout_ms", "env"}, &o, error)) < 0) return r;
  req.id = ++next_request_;
  req.timeout_ms = o.timeout_ms;
  req.memory_mb = o.memory_mb;
  req.idle_timeout_ms = o.idle_timeout_ms;
  req.env = std::move(o.env);
  auto call = std::make_shared<DbusCall>(this, m, DbusCall::Kind::create, false, 0);
  auto id = manager_.create_session(caller, std::move(req), call);
  if (!id) return set_error(error, id.error().code, id.error().message);
  // Until it is open, the session dies with the service (as with a connection).
  call->set_run(*id);
  calls_.emplace(call.get(), std::move(call));
  return 1;
}

int DbusService::session_call(sd_bus_message* m, bool exec, sd_bus_error* error) {
  Caller caller;
  int r = authorize(m, &caller, error);
  if (r < 0) return r;
  const char* session = nullptr;
  if ((r = sd_bus_message_read(m, "s", &session)) < 0) return r;
  uint64_t request_id = ++next_request_;
  proto::Message req;
  Options o;
  if (exec) {
    const char* code = nullptr;
    if ((r = sd_bus_message_read(m, "s", &code)) < 0) return r;
    if ((r = read_options(m, {"timeout_ms", "stream", "request"}, &o, error)) < 0) return r;
    req = proto::SessionExec{request_id, session, code, o.timeout_ms};
  } else {
    req = proto::SessionClose{request_id, session};
  }
  auto call = std::make_shared<DbusCall>(this, m, exec ? DbusCall::Kind::exec : DbusCall::Kind::close, o.stream,
                                         o.request);
  // Session calls outlive the bus call's caller: nothing is cancelled.
  if (auto res = manager_.session_request(caller, request_id, std::move(req), call); !res)
    return set_error(error, res.error().code, res.error().message);
  calls_.emplace(call.get(), std::move(call));
  return 1;
}

int DbusService::list_sessions(sd_bus_message* m, sd_bus_error* error) {
  Caller caller;
  int r = authorize(m, &caller, error);
  if (r < 0) return r;
  sd_bus_message* raw = nullptr;
  if ((r = sd_bus_message_new_method_return(m, &raw)) < 0) return r;
  MessageRef reply(raw);
  r = sd_bus_message_open_container(raw, 'a', "(ssuutt)");
  for (const auto& s : manager_.sessions(caller)) {
    if (r < 0) break;
    r = sd_bus_message_append(raw, "(ssuutt)", s.session.c_str(), std::string(proto::language_name(s.language)).c_str(),
                              s.memory_mb, s.idle_timeout_ms, s.exec_count, s.last_activity_unix_ms);
  }
  if (r >= 0) r = sd_bus_message_close_container(raw);
  if (r >= 0) r = sd_bus_send(bus_, raw, nullptr);
  return r < 0 ? r : 1;
}

int DbusService::property(const char* name, sd_bus_message* reply, sd_bus_error* error) {
  auto s = manager_.status();
  std::string p = name;
  if (p == "Version") return sd_bus_message_append(reply, "s", s.version.c_str());
  if (p == "Accelerator") return sd_bus_message_append(reply, "s", s.accelerator.c_str());
  if (p == "AcceleratorReason") return sd_bus_message_append(reply, "s", s.accelerator_reason.c_str());
  if (p == "HostLimits") return sd_bus_message_append(reply, "s", s.host_limits.c_str());
  if (p == "VMs") return sd_bus_message_append(reply, "u", s.vms);
  if (p == "MaxVMs") return sd_bus_message_append(reply, "u", s.max_vms);
  if (p == "RunsActive") return sd_bus_message_append(reply, "u", s.runs_active);
  if (p == "RunsQueued") return sd_bus_message_append(reply, "u", s.runs_queued);
  if (p == "Pool") {
    int r = sd_bus_message_open_container(reply, 'a', "(suuutt)");
    for (const auto& e : s.pool) {
      if (r < 0) break;
      r = sd_bus_message_append(reply, "(suuutt)", std::string(proto::language_name(e.language)).c_str(), e.target,
                                e.ready, e.booting, e.hits, e.misses);
    }
    if (r < 0) return r;
    return sd_bus_message_close_container(reply);
  }
  return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "unknown property %s", name);
}

}  // namespace sandbox::daemon
