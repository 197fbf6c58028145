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
typedef struct sandbox_session sandbox_session;
typedef struct sandbox_file_list sandbox_file_list;

typedef enum { SANDBOX_PYTHON = 0, SANDBOX_JAVASCRIPT = 1, SANDBOX_RAW = 2 } sandbox_language;
typedef enum { SANDBOX_STDOUT = 1, SANDBOX_STDERR = 2 } sandbox_stream;

typedef struct {
  sandbox_language language;
  const char* code; /* not necessarily NUL-terminated */
  size_t code_len;
  const char* const* env; /* "NAME=VALUE" strings, NULL-terminated; may be NULL */
  uint32_t timeout_ms;
  uint32_t memory_mb;
  /* Network (all off by default): outbound connections only to these
   * names ("example.org", "*.example.org", "name:port"), or with network 1
   * and no names the operator's default list; guest TCP ports offered on
   * 127.0.0.1 as "GUEST[:HOST]" strings ("GUEST:unix": a Unix socket only
   * the caller's uid can use). Lists are NULL-terminated; may be NULL. */
  int network;
  const char* const* allowed_domains;
  const char* const* expose;
  /* Packages to install first, "name==1.2.3" (python) or "name@1.2.3"
   * (javascript); NULL-terminated, may be NULL. */
  const char* const* packages;
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
/* Interpreter start-up the run waited for; not part of the timeout. */
uint64_t sandbox_result_startup_ms(const sandbox_result* r);
int sandbox_result_warm_pool_hit(const sandbox_result* r);
const char* sandbox_result_accelerator(const sandbox_result* r);
/* The package layer the run used: its key ("" without packages), "hit",
 * "built", "joined" or "fetched" (from the nodes' shared store), and the
 * build's or fetch's cost in ms (0 on a hit). */
const char* sandbox_result_layer_key(const sandbox_result* r);
const char* sandbox_result_layer_cache(const sandbox_result* r);
uint64_t sandbox_result_layer_build_ms(const sandbox_result* r);
void sandbox_result_free(sandbox_result* r);

/* Sessions: a VM kept alive across execs; variables, imports, files and
 * background processes persist. A sandbox_session is a handle: freeing it
 * leaves the session open in the daemon until sandbox_session_close, its
 * idle timeout or its VM's end. */
typedef struct {
  sandbox_language language;
  const char* const* env;   /* "NAME=VALUE", NULL-terminated; the interpreter's for the whole session */
  uint32_t timeout_ms;      /* each exec's default */
  uint32_t memory_mb;
  uint32_t idle_timeout_ms; /* closed after this long without a call */
  /* Network (all off by default): outbound connections only to these
   * names ("example.org", "*.example.org", "name:port"), or with network 1
   * and no names the operator's default list; guest TCP ports offered on
   * 127.0.0.1 as "GUEST[:HOST]" strings. Lists are NULL-terminated; may be NULL. */
  int network;
  const char* const* allowed_domains;
  const char* const* expose;
  const char* const* packages; /* as in sandbox_run_options */
} sandbox_session_options;

/* Fills defaults: python, 30 s per exec, 256 MB, 300 s idle, no env. */
void sandbox_session_options_init(sandbox_session_options* options);
/* Blocks until the session's VM is ready. */
int sandbox_session_create(const sandbox_client* client, const sandbox_session_options* options,
                           sandbox_session** session, sandbox_error** error);
/* A handle on an existing session of the caller's, by id (checked on use). */
sandbox_session* sandbox_session_open(const sandbox_client* client, const char* id);
const char* sandbox_session_id(const sandbox_session* session);
/* Like sandbox_run, in the session's interpreter; timeout_ms 0 takes the
 * session's default. */
int sandbox_session_exec(const sandbox_session* session, const char* code, size_t code_len, uint32_t timeout_ms,
                         sandbox_output_fn on_output, void* user_data, sandbox_result** result, sandbox_error** error);
/* Paths are relative to the session's home; files are at most 50 MB. */
int sandbox_session_write_file(const sandbox_session* session, const char* path, const char* data, size_t len,
                               int executable, sandbox_error** error);
/* *data is malloc'ed (NUL-terminated past *len): free it with free(). */
int sandbox_session_read_file(const sandbox_session* session, const char* path, char** data, size_t* len,
                              sandbox_error** error);
/* dir NULL or "" lists the home. */
int sandbox_session_list_files(const sandbox_session* session, const char* dir, sandbox_file_list** list,
                               sandbox_error** error);
/* Replaces a live session's egress allowlist: allowed_domains NULL-terminated
 * (may be NULL); network 1 with no domains is the operator's default list;
 * neither turns egress off. Open connections the new list does not admit are reset. */
int sandbox_session_set_network(const sandbox_session* session, int network, const char* const* allowed_domains,
                                sandbox_error** error);
/* Destroys the session's VM; later calls get session_closed. */
int sandbox_session_close(const sandbox_session* session, sandbox_error** error);
void sandbox_session_free(sandbox_session* session);

size_t sandbox_file_list_count(const sandbox_file_list* list);
const char* sandbox_file_list_name(const sandbox_file_list* list, size_t i);
int sandbox_file_list_is_dir(const sandbox_file_list* list, size_t i);
uint64_t sandbox_file_list_size(const sandbox_file_list* list, size_t i);
/* 1 when the directory had more entries than one listing returns (1000). */
int sandbox_file_list_truncated(const sandbox_file_list* list);
void sandbox_file_list_free(sandbox_file_list* list);

/* Exposed ports of a run (or of a session exec): guest port, host port on
 * 127.0.0.1 and its URL; i < sandbox_result_exposed_count. */
size_t sandbox_result_exposed_count(const sandbox_result* r);
uint32_t sandbox_result_exposed_internal(const sandbox_result* r, size_t i);
uint32_t sandbox_result_exposed_external(const sandbox_result* r, size_t i);
const char* sandbox_result_exposed_url(const sandbox_result* r, size_t i);
/* What the run's network did: connections, bytes into and out of the
 * guest, and the refused connections and lookups (host, port 0 for DNS, reason). */
uint64_t sandbox_result_network_connections(const sandbox_result* r);
uint64_t sandbox_result_network_bytes_in(const sandbox_result* r);
uint64_t sandbox_result_network_bytes_out(const sandbox_result* r);
size_t sandbox_result_network_denied_count(const sandbox_result* r);
const char* sandbox_result_network_denied_host(const sandbox_result* r, size_t i);
uint32_t sandbox_result_network_denied_port(const sandbox_result* r, size_t i);
const char* sandbox_result_network_denied_reason(const sandbox_result* r, size_t i);
/* The URL on the host of a session's exposed guest port, or NULL (only for
 * sessions made by sandbox_session_create). */
const char* sandbox_session_exposed_url(const sandbox_session* session, uint32_t guest_port);

/* Session execs: 1 when the interpreter had to be restarted (its state is gone). */
int sandbox_result_state_lost(const sandbox_result* r);

/* The images the daemon boots and what is inside them, as the JSON object
 * `sandboxctl images --json` prints: images [{role, file, sha256}],
 * kernel_release, tools [{name, package, version}], packages [{name,
 * version}]... *json is malloc'ed and NUL-terminated: free it with free(). */
int sandbox_images_json(const sandbox_client* client, char** json, sandbox_error** error);

/* The daemon's metrics in Prometheus' text format, as `sandboxctl metrics`
 * prints them. *text is malloc'ed and NUL-terminated: free it with free(). */
int sandbox_metrics_text(const sandbox_client* client, char** text, sandbox_error** error);

/* Stable code name from the shared taxonomy, e.g. "invalid_argument". */
const char* sandbox_error_code(const sandbox_error* e);
const char* sandbox_error_message(const sandbox_error* e);
int sandbox_error_retryable(const sandbox_error* e);
void sandbox_error_free(sandbox_error* e);

#ifdef __cplusplus
}
#endif

#endif /* SANDBOX_SANDBOX_H */
