// The C API: thin wrappers over sandbox::Client.
#include "sandbox/sandbox.h"

#include <new>
#include <string>

#include "sandbox/client.h"

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

namespace {

void set_error(sandbox_error** out, sandbox::ErrorCode code, std::string message) {
  if (!out) return;
  *out = new (std::nothrow) sandbox_error{std::string(sandbox::error_code_name(code)), std::move(message),
                                          sandbox::error_code_retryable(code)};
}

}  // namespace

extern "C" {

void sandbox_run_options_init(sandbox_run_options* o) {
  if (!o) return;
  *o = sandbox_run_options{SANDBOX_PYTHON, nullptr, 0, nullptr, 30'000, 256};
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
  if (o->language < SANDBOX_PYTHON || o->language > SANDBOX_RAW) {
    set_error(error, sandbox::ErrorCode::invalid_argument, "unknown language");
    return -1;
  }
  try {
    sandbox::RunRequest req;
    req.language = static_cast<sandbox::Language>(o->language);
    req.code.assign(o->code ? o->code : "", o->code_len);
    req.timeout = std::chrono::milliseconds(o->timeout_ms);
    req.memory_mb = o->memory_mb;
    for (const char* const* e = o->env; e && *e; ++e) {
      std::string entry(*e);
      auto eq = entry.find('=');
      if (eq == std::string::npos) {
        set_error(error, sandbox::ErrorCode::invalid_argument, "env entry '" + entry + "' is not NAME=VALUE");
        return -1;
      }
      req.env.emplace_back(entry.substr(0, eq), entry.substr(eq + 1));
    }
    sandbox::OutputCallback cb;
    if (on_output)
      cb = [&](sandbox::Stream s, std::string_view d) {
        on_output(user, s == sandbox::Stream::err ? SANDBOX_STDERR : SANDBOX_STDOUT, d.data(), d.size());
      };
    auto r = c->client.run(req, cb);
    if (!r) {
      set_error(error, r.error().code, r.error().message);
      return -1;
    }
    *result = new sandbox_result{std::move(r.value())};
    return 0;
  } catch (const std::exception& e) {
    set_error(error, sandbox::ErrorCode::internal, e.what());
    return -1;
  }
}

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
int sandbox_result_warm_pool_hit(const sandbox_result* r) { return r->r.warm_pool_hit; }
const char* sandbox_result_accelerator(const sandbox_result* r) { return r->r.accelerator.c_str(); }
void sandbox_result_free(sandbox_result* r) { delete r; }

const char* sandbox_error_code(const sandbox_error* e) { return e->code.c_str(); }
const char* sandbox_error_message(const sandbox_error* e) { return e->message.c_str(); }
int sandbox_error_retryable(const sandbox_error* e) { return e->retryable; }
void sandbox_error_free(sandbox_error* e) { delete e; }

}  // extern "C"
