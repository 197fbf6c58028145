// The C API: thin wrappers over sandbox::Client.
#include "sandbox/sandbox.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "sandbox/client.h"
#include "sandbox/json.h"
#include "sandbox/types.h"

struct sandbox_client {
  sandbox::Client client;
};
struct sandbox_result {
  sandbox::RunResult r;
};
struct sandbox_error {
  std::string code;
  std::string message;
  bool retryable;
};
struct sandbox_session {
  sandbox::Session session;
};
struct sandbox_file_list {
  sandbox::FileListing listing;
};

// The C enums are the C++ ones, value for value.
static_assert(static_cast<int>(sandbox::Language::python) == SANDBOX_PYTHON);
static_assert(static_cast<int>(sandbox::Language::javascript) == SANDBOX_JAVASCRIPT);
static_assert(static_cast<int>(sandbox::Language::raw) == SANDBOX_RAW);

namespace {

void set_error(sandbox_error** out, sandbox::ErrorCode code, std::string message) {
  if (!out) return;
  *out = new (std::nothrow) sandbox_error{std::string(sandbox::error_code_name(code)), std::move(message),
                                          sandbox::error_code_retryable(code)};
}

bool parse_env(const char* const* env, std::vector<std::pair<std::string, std::string>>* out, sandbox_error** error) {
  for (const char* const* e = env; e && *e; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    if (eq == std::string::npos) {
      set_error(error, sandbox::ErrorCode::invalid_argument, "env entry '" + entry + "' is not NAME=VALUE");
      return false;
    }
    out->emplace_back(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return true;
}

bool parse_network(int network, const char* const* domains, const char* const* expose, sandbox::NetworkRequest* out,
                   sandbox_error** error) {
  out->network = network != 0;
  for (const char* const* d = domains; d && *d; ++d) {
    out->network = true;
    out->allowed_domains.emplace_back(*d);
  }
  for (const char* const* e = expose; e && *e; ++e) {
    std::string s(*e);
    auto colon = s.find(':');
    char* end = nullptr;
    unsigned long in = std::strtoul(s.substr(0, colon).c_str(), &end, 10);
    bool good = !s.empty() && *end == '\0' && in > 0 && in <= 65535;
    unsigned long ext = 0;
    bool unix_socket = colon != std::string::npos && s.substr(colon + 1) == "unix";
    if (good && colon != std::string::npos && !unix_socket) {
      std::string h = s.substr(colon + 1);
      ext = std::strtoul(h.c_str(), &end, 10);
      good = !h.empty() && *end == '\0' && ext <= 65535;
    }
    if (!good) {
      set_error(error, sandbox::ErrorCode::invalid_argument, "expose entry '" + s + "' is not GUEST[:HOST]");
      return false;
    }
    out->expose_ports.push_back({static_cast<uint32_t>(in), static_cast<uint32_t>(ext), unix_socket});
  }
  return true;
}

bool valid_language(sandbox_language l) { return l >= SANDBOX_PYTHON && l <= SANDBOX_RAW; }

sandbox::OutputCallback output_callback(sandbox_output_fn on_output, void* user) {
  if (!on_output) return {};
  return [on_output, user](sandbox::Stream s, std::string_view d) {
    on_output(user, s == sandbox::Stream::err ? SANDBOX_STDERR : SANDBOX_STDOUT, d.data(), d.size());
  };
}

// Runs `fn` (returning 0 or -1) with C++ exceptions turned into errors:
// none may cross into C.
template <class Fn>
int guarded(sandbox_error** error, Fn&& fn) {
  if (error) *error = nullptr;
  try {
    return fn();
  } catch (const std::exception& e) {
    set_error(error, sandbox::ErrorCode::internal, e.what());
    return -1;
  }
}

int null_argument(sandbox_error** error, const char* what) {
  set_error(error, sandbox::ErrorCode::invalid_argument, std::string(what) + " must not be NULL");
  return -1;
}

// Hands `bytes` to the C caller as a NUL-terminated malloc'd copy (freed
// with free()); -1 and an error if memory runs out.
int copy_out(std::string_view bytes, char** out, sandbox_error** error) {
  auto* copy = static_cast<char*>(std::malloc(bytes.size() + 1));
  if (!copy) {
    set_error(error, sandbox::ErrorCode::internal, "out of memory for " + std::to_string(bytes.size()) + " bytes");
    return -1;
  }
  std::memcpy(copy, bytes.data(), bytes.size());
  copy[bytes.size()] = '\0';
  *out = copy;
  return 0;
}

}  // namespace

extern "C" {

void sandbox_run_options_init(sandbox_run_options* o) {
  if (!o) return;
  *o = sandbox_run_options{SANDBOX_PYTHON, nullptr, 0, nullptr, 30'000, 256, 0, nullptr, nullptr, nullptr};
}

sandbox_client* sandbox_client_new(const char* socket_path) {
  return new (std::nothrow) sandbox_client{sandbox::Client(socket_path ? socket_path : sandbox::kDefaultSocketPath)};
}

void sandbox_client_free(sandbox_client* c) { delete c; }

int sandbox_run(const sandbox_client* c, const sandbox_run_options* o, sandbox_output_fn on_output, void* user,
                sandbox_result** result, sandbox_error** error) {
  if (result) *result = nullptr;
  if (error) *error = nullptr;
  if (!c || !o || !result || (!o->code && o->code_len)) {
    set_error(error, sandbox::ErrorCode::invalid_argument, "client, options and result must not be NULL");
    return -1;
  }
  if (!valid_language(o->language)) {
    set_error(error, sandbox::ErrorCode::invalid_argument, "unknown language");
    return -1;
  }
  return guarded(error, [&] {
    sandbox::RunRequest req;
    req.language = static_cast<sandbox::Language>(o->language);
    req.code.assign(o->code ? o->code : "", o->code_len);
    req.timeout = std::chrono::milliseconds(o->timeout_ms);
    req.memory_mb = o->memory_mb;
    if (!parse_env(o->env, &req.env, error)) return -1;
    if (!parse_network(o->network, o->allowed_domains, o->expose, &req.net, error)) return -1;
    for (const char* const* pk = o->packages; pk && *pk; ++pk) req.packages.emplace_back(*pk);
    auto r = c->client.run(req, output_callback(on_output, user));
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    *result = new sandbox_result{std::move(r.value())};
    return 0;
  });
}

int sandbox_images_json(const sandbox_client* c, char** json, sandbox_error** error) {
  if (json) *json = nullptr;
  if (error) *error = nullptr;
  if (!c || !json) return null_argument(error, "client and json");
  return guarded(error, [&] {
    auto r = c->client.images();
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    return copy_out(sandbox::to_json(*r), json, error);
  });
}

int sandbox_metrics_text(const sandbox_client* c, char** text, sandbox_error** error) {
  if (text) *text = nullptr;
  if (error) *error = nullptr;
  if (!c || !text) return null_argument(error, "client and text");
  return guarded(error, [&] {
    auto r = c->client.metrics();
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    return copy_out(*r, text, error);
  });
}

void sandbox_session_options_init(sandbox_session_options* o) {
  if (!o) return;
  *o = sandbox_session_options{SANDBOX_PYTHON, nullptr, 30'000, 256, 300'000, 0, nullptr, nullptr, nullptr};
}

int sandbox_session_create(const sandbox_client* c, const sandbox_session_options* o, sandbox_session** session,
                           sandbox_error** error) {
  if (session) *session = nullptr;
  if (error) *error = nullptr;
  if (!c || !o || !session) return null_argument(error, "client, options and session");
  if (!valid_language(o->language)) {
    set_error(error, sandbox::ErrorCode::invalid_argument, "unknown language");
    return -1;
  }
  return guarded(error, [&] {
    sandbox::SessionOptions so;
    so.language = static_cast<sandbox::Language>(o->language);
    so.timeout = std::chrono::milliseconds(o->timeout_ms);
    so.memory_mb = o->memory_mb;
    so.idle_timeout = std::chrono::milliseconds(o->idle_timeout_ms);
    if (!parse_env(o->env, &so.env, error)) return -1;
    if (!parse_network(o->network, o->allowed_domains, o->expose, &so.net, error)) return -1;
    for (const char* const* pk = o->packages; pk && *pk; ++pk) so.packages.emplace_back(*pk);
    auto s = c->client.create_session(so);
    if (!s) {
      set_error(error, s.error().code, s.error().message);
      return -1;
    }
    *session = new sandbox_session{std::move(s.value())};
    return 0;
  });
}

sandbox_session* sandbox_session_open(const sandbox_client* c, const char* id) {
  if (!c || !id) return nullptr;
  return new (std::nothrow) sandbox_session{c->client.session(id)};
}

const char* sandbox_session_id(const sandbox_session* s) { return s ? s->session.id().c_str() : nullptr; }

int sandbox_session_exec(const sandbox_session* s, const char* code, size_t code_len, uint32_t timeout_ms,
                         sandbox_output_fn on_output, void* user, sandbox_result** result, sandbox_error** error) {
  if (result) *result = nullptr;
  if (error) *error = nullptr;
  if (!s || !result || (!code && code_len)) return null_argument(error, "session, code and result");
  return guarded(error, [&] {
    auto r = s->session.exec(std::string_view(code ? code : "", code_len), output_callback(on_output, user),
                             std::chrono::milliseconds(timeout_ms));
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    *result = new sandbox_result{std::move(r.value())};
    return 0;
  });
}

int sandbox_session_write_file(const sandbox_session* s, const char* path, const char* data, size_t len,
                               int executable, sandbox_error** error) {
  if (error) *error = nullptr;
  if (!s || !path || (!data && len)) return null_argument(error, "session, path and data");
  return guarded(error, [&] {
    auto r = s->session.write_file(path, std::string_view(data ? data : "", len), executable != 0);
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    return 0;
  });
}

int sandbox_session_read_file(const sandbox_session* s, const char* path, char** data, size_t* len,
                              sandbox_error** error) {
  if (data) *data = nullptr;
  if (len) *len = 0;
  if (error) *error = nullptr;
  if (!s || !path || !data || !len) return null_argument(error, "session, path, data and len");
  return guarded(error, [&] {
    auto r = s->session.read_file(path);
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    if (copy_out(*r, data, error) != 0) return -1;
    *len = r->size();
    return 0;
  });
}

int sandbox_session_list_files(const sandbox_session* s, const char* dir, sandbox_file_list** list,
                               sandbox_error** error) {
  if (list) *list = nullptr;
  if (error) *error = nullptr;
  if (!s || !list) return null_argument(error, "session and list");
  return guarded(error, [&] {
    auto r = s->session.list_files(dir ? dir : "");
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    *list = new sandbox_file_list{std::move(r.value())};
    return 0;
  });
}

int sandbox_session_close(const sandbox_session* s, sandbox_error** error) {
  if (error) *error = nullptr;
  if (!s) return null_argument(error, "session");
  return guarded(error, [&] {
    auto r = s->session.close();
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    return 0;
  });
}

void sandbox_session_free(sandbox_session* s) { delete s; }

size_t sandbox_file_list_count(const sandbox_file_list* l) { return l ? l->listing.entries.size() : 0; }
const char* sandbox_file_list_name(const sandbox_file_list* l, size_t i) {
  return l && i < l->listing.entries.size() ? l->listing.entries[i].name.c_str() : nullptr;
}
int sandbox_file_list_is_dir(const sandbox_file_list* l, size_t i) {
  return l && i < l->listing.entries.size() ? l->listing.entries[i].is_dir : 0;
}
uint64_t sandbox_file_list_size(const sandbox_file_list* l, size_t i) {
  return l && i < l->listing.entries.size() ? l->listing.entries[i].size : 0;
}
int sandbox_file_list_truncated(const sandbox_file_list* l) { return l ? l->listing.truncated : 0; }
void sandbox_file_list_free(sandbox_file_list* l) { delete l; }

const char* sandbox_result_stdout(const sandbox_result* r, size_t* len) {
  if (len) *len = r->r.stdout_data.size();
  return r->r.stdout_data.data();
}
const char* sandbox_result_stderr(const sandbox_result* r, size_t* len) {
  if (len) *len = r->r.stderr_data.size();
  return r->r.stderr_data.data();
}
int sandbox_result_exit_code(const sandbox_result* r) { return r->r.exit_code; }
int sandbox_result_signal(const sandbox_result* r) { return r->r.signal; }
int sandbox_result_timed_out(const sandbox_result* r) { return r->r.timed_out; }
int sandbox_result_stdout_truncated(const sandbox_result* r) { return r->r.stdout_truncated; }
int sandbox_result_stderr_truncated(const sandbox_result* r) { return r->r.stderr_truncated; }
uint64_t sandbox_result_execution_time_ms(const sandbox_result* r) { return r->r.execution_time_ms; }
uint64_t sandbox_result_cpu_time_ms(const sandbox_result* r) { return r->r.cpu_time_ms; }
uint64_t sandbox_result_memory_peak_mb(const sandbox_result* r) { return r->r.memory_peak_mb; }
uint64_t sandbox_result_total_ms(const sandbox_result* r) { return r->r.timing.total_ms; }
uint64_t sandbox_result_boot_ms(const sandbox_result* r) { return r->r.timing.boot_ms; }
uint64_t sandbox_result_startup_ms(const sandbox_result* r) { return r->r.timing.startup_ms; }
int sandbox_result_warm_pool_hit(const sandbox_result* r) { return r->r.warm_pool_hit; }
const char* sandbox_result_accelerator(const sandbox_result* r) { return r->r.accelerator.c_str(); }
const char* sandbox_result_layer_key(const sandbox_result* r) { return r->r.layer.key.c_str(); }
const char* sandbox_result_layer_cache(const sandbox_result* r) { return r->r.layer.cache.c_str(); }
uint64_t sandbox_result_layer_build_ms(const sandbox_result* r) { return r->r.layer.build_ms; }
int sandbox_result_state_lost(const sandbox_result* r) { return r->r.state_lost; }
size_t sandbox_result_exposed_count(const sandbox_result* r) { return r ? r->r.exposed_ports.size() : 0; }
uint32_t sandbox_result_exposed_internal(const sandbox_result* r, size_t i) {
  return r && i < r->r.exposed_ports.size() ? r->r.exposed_ports[i].internal : 0;
}
uint32_t sandbox_result_exposed_external(const sandbox_result* r, size_t i) {
  return r && i < r->r.exposed_ports.size() ? r->r.exposed_ports[i].external : 0;
}
const char* sandbox_result_exposed_url(const sandbox_result* r, size_t i) {
  return r && i < r->r.exposed_ports.size() ? r->r.exposed_ports[i].url.c_str() : nullptr;
}
uint64_t sandbox_result_network_connections(const sandbox_result* r) { return r ? r->r.network.connections : 0; }
uint64_t sandbox_result_network_bytes_in(const sandbox_result* r) { return r ? r->r.network.bytes_in : 0; }
uint64_t sandbox_result_network_bytes_out(const sandbox_result* r) { return r ? r->r.network.bytes_out : 0; }
size_t sandbox_result_network_denied_count(const sandbox_result* r) { return r ? r->r.network.denied.size() : 0; }
const char* sandbox_result_network_denied_host(const sandbox_result* r, size_t i) {
  return r && i < r->r.network.denied.size() ? r->r.network.denied[i].host.c_str() : nullptr;
}
uint32_t sandbox_result_network_denied_port(const sandbox_result* r, size_t i) {
  return r && i < r->r.network.denied.size() ? r->r.network.denied[i].port : 0;
}
const char* sandbox_result_network_denied_reason(const sandbox_result* r, size_t i) {
  return r && i < r->r.network.denied.size() ? r->r.network.denied[i].reason.c_str() : nullptr;
}
int sandbox_session_set_network(const sandbox_session* s, int network, const char* const* domains,
                                sandbox_error** error) {
  if (error) *error = nullptr;
  if (!s) return null_argument(error, "session");
  return guarded(error, [&] {
    std::vector<std::string> list;
    for (const char* const* d = domains; d && *d; ++d) list.emplace_back(*d);
    auto r = s->session.set_network(list, network != 0);
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    return 0;
  });
}

const char* sandbox_session_exposed_url(const sandbox_session* s, uint32_t guest_port) {
  if (!s) return nullptr;
  for (const auto& p : s->session.info().exposed_ports)
    if (p.internal == guest_port) return p.url.c_str();
  return nullptr;
}
void sandbox_result_free(sandbox_result* r) { delete r; }

const char* sandbox_error_code(const sandbox_error* e) { return e->code.c_str(); }
const char* sandbox_error_message(const sandbox_error* e) { return e->message.c_str(); }
int sandbox_error_retryable(const sandbox_error* e) { return e->retryable; }
void sandbox_error_free(sandbox_error* e) { delete e; }

}  // extern "C"
