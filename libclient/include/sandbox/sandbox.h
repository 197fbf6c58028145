/* libsandbox C API: the same capabilities as the C++ API (sandbox/client.h)
 * for C and for language bindings. All functions are thread-safe; objects
 * returned to the caller are freed with their matching _free function. */
#ifndef SANDBOX_SANDBOX_H
#define SANDBOX_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sandbox_client sandbox_client;
typedef struct sandbox_result sandbox_result;
typedef struct sandbox_error sandbox_error;

typedef enum { SANDBOX_PYTHON = 0, SANDBOX_JAVASCRIPT = 1, SANDBOX_RAW = 2 } sandbox_language;
typedef enum { SANDBOX_STDOUT = 1, SANDBOX_STDERR = 2 } sandbox_stream;

typedef struct {
  sandbox_language language;
  const char* code; /* not necessarily NUL-terminated */
  size_t code_len;
  const char* const* env; /* "NAME=VALUE" strings, NULL-terminated; may be NULL */
  uint32_t timeout_ms;
  uint32_t memory_mb;
} sandbox_run_options;

typedef void (*sandbox_output_fn)(void* user_data, sandbox_stream stream, const char* data, size_t len);

/* Fills defaults: python, 30 s, 256 MB, no env. */
void sandbox_run_options_init(sandbox_run_options* options);

/* socket_path NULL means the default /run/sandboxd/sandboxd.sock. */
sandbox_client* sandbox_client_new(const char* socket_path);
void sandbox_client_free(sandbox_client* client);

/* Returns 0 and sets *result on success; returns -1 and sets *error
 * (if error is not NULL) otherwise. on_output may be NULL. */
int sandbox_run(const sandbox_client* client, const sandbox_run_options* options, sandbox_output_fn on_output,
                void* user_data, sandbox_result** result, sandbox_error** error);

const char* sandbox_result_stdout(const sandbox_result* r, size_t* len);
const char* sandbox_result_stderr(const sandbox_result* r, size_t* len);
int sandbox_result_exit_code(const sandbox_result* r);
int sandbox_result_signal(const sandbox_result* r);
int sandbox_result_timed_out(const sandbox_result* r);
int sandbox_result_stdout_truncated(const sandbox_result* r);
int sandbox_result_stderr_truncated(const sandbox_result* r);
uint64_t sandbox_result_execution_time_ms(const sandbox_result* r);
uint64_t sandbox_result_cpu_time_ms(const sandbox_result* r);
uint64_t sandbox_result_memory_peak_mb(const sandbox_result* r);
uint64_t sandbox_result_total_ms(const sandbox_result* r);
uint64_t sandbox_result_boot_ms(const sandbox_result* r);
int sandbox_result_warm_pool_hit(const sandbox_result* r);
const char* sandbox_result_accelerator(const sandbox_result* r);
void sandbox_result_free(sandbox_result* r);

/* Stable code name from the shared taxonomy, e.g. "invalid_argument". */
const char* sandbox_error_code(const sandbox_error* e);
const char* sandbox_error_message(const sandbox_error* e);
int sandbox_error_retryable(const sandbox_error* e);
void sandbox_error_free(sandbox_error* e);

#ifdef __cplusplus
}
#endif

#endif /* SANDBOX_SANDBOX_H */
