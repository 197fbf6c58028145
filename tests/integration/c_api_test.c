/* The C API, compiled as C: proves the header is plain C and usable. */
#include <stdio.h>
#include <string.h>

#include "sandbox/sandbox.h"

struct collected {
  char out[256];
  size_t len;
};

static void on_output(void* user, sandbox_stream stream, const char* data, size_t len) {
  struct collected* c = user;
  if (stream == SANDBOX_STDOUT && c->len + len < sizeof c->out) {
    memcpy(c->out + c->len, data, len);
    c->len += len;
  }
}

/* Returns 0 when a run and an invalid request behave; else writes why. */
int c_api_check(const char* socket_path, char* why, size_t why_len) {
  sandbox_client* client = sandbox_client_new(socket_path);
  sandbox_run_options opts;
  sandbox_run_options_init(&opts);
  opts.language = SANDBOX_RAW;
  opts.code = "echo c-api $GREETING; exit 5";
  opts.code_len = strlen(opts.code);
  const char* env[] = {"GREETING=hello", NULL};
  opts.env = env;
  struct collected c = {{0}, 0};
  sandbox_result* result = NULL;
  sandbox_error* error = NULL;
  int rc = sandbox_run(client, &opts, on_output, &c, &result, &error);
  if (rc != 0) {
    snprintf(why, why_len, "run failed: %s: %s", sandbox_error_code(error), sandbox_error_message(error));
    sandbox_error_free(error);
    sandbox_client_free(client);
    return 1;
  }
  size_t len = 0;
  const char* out = sandbox_result_stdout(result, &len);
  /* The streamed chunks add up to the final stdout. */
  int ok = len == 12 && memcmp(out, "c-api hello\n", 12) == 0 && sandbox_result_exit_code(result) == 5 &&
           c.len == len && memcmp(c.out, out, len) == 0;
  /* No packages, no layer. */
  ok = ok && strcmp(sandbox_result_layer_key(result), "") == 0 && strcmp(sandbox_result_layer_cache(result), "") == 0 &&
       sandbox_result_layer_build_ms(result) == 0;
  if (!ok) snprintf(why, why_len, "unexpected result: exit %d, stdout '%.*s'", sandbox_result_exit_code(result), (int)len, out);
  sandbox_result_free(result);
  if (!ok) {
    sandbox_client_free(client);
    return 1;
  }
  opts.memory_mb = 1;
  rc = sandbox_run(client, &opts, NULL, NULL, &result, &error);
  if (rc == 0 || strcmp(sandbox_error_code(error), "invalid_argument") != 0 || sandbox_error_retryable(error)) {
    snprintf(why, why_len, "memory_mb=1 was not refused as invalid_argument");
    if (error) sandbox_error_free(error);
    if (result) sandbox_result_free(result);
    sandbox_client_free(client);
    return 1;
  }
  sandbox_error_free(error);
  error = NULL;
  result = NULL;
  /* Network options: no exposed ports and no network in a plain result;
   * an IP address as an allowed domain and a bad port mapping refused. */
  opts.memory_mb = 256;
  {
    const char* const domains[] = {"127.0.0.1", NULL};
    opts.allowed_domains = domains;
    rc = sandbox_run(client, &opts, NULL, NULL, &result, &error);
    opts.allowed_domains = NULL;
    int refused = rc != 0 && strcmp(sandbox_error_code(error), "invalid_argument") == 0;
    if (error) sandbox_error_free(error), error = NULL;
    if (result) sandbox_result_free(result), result = NULL;
    const char* const ports[] = {"8080:80", NULL};
    opts.expose = ports;
    rc = sandbox_run(client, &opts, NULL, NULL, &result, &error);
    opts.expose = NULL;
    refused = refused && rc != 0 && strcmp(sandbox_error_code(error), "invalid_argument") == 0;
    if (error) sandbox_error_free(error), error = NULL;
    if (result) sandbox_result_free(result), result = NULL;
    if (!refused) {
      snprintf(why, why_len, "an IP address as allowed domain or host port 80 was not invalid_argument");
      sandbox_client_free(client);
      return 1;
    }
  }
  /* Packages: a URL is refused, by name, before anything runs. */
  {
    const char* const packages[] = {"https://evil.example/x.whl", NULL};
    opts.language = SANDBOX_PYTHON;
    opts.code = "print(1)";
    opts.code_len = strlen(opts.code);
    opts.packages = packages;
    rc = sandbox_run(client, &opts, NULL, NULL, &result, &error);
    opts.packages = NULL;
    int refused = rc != 0 && strcmp(sandbox_error_code(error), "package_not_allowed") == 0 &&
                  strstr(sandbox_error_message(error), "https://evil.example/x.whl") != NULL;
    if (error) sandbox_error_free(error), error = NULL;
    if (result) sandbox_result_free(result), result = NULL;
    if (!refused) {
      snprintf(why, why_len, "a URL as a package was not package_not_allowed naming it");
      sandbox_client_free(client);
      return 1;
    }
  }
  sandbox_client_free(client);
  return 0;
}

#include <stdlib.h>

#define SESSION_FAIL(...)                   \
  do {                                      \
    snprintf(why, why_len, __VA_ARGS__);    \
    goto done;                              \
  } while (0)

/* Sessions through the C API: state across execs, files both ways, a
 * second handle by id, typed errors, and close. Returns 0 when all behave. */
int c_api_session_check(const char* socket_path, char* why, size_t why_len) {
  int failed = 1;
  sandbox_client* client = sandbox_client_new(socket_path);
  sandbox_session* session = NULL;
  sandbox_session* again = NULL;
  sandbox_result* result = NULL;
  sandbox_error* error = NULL;
  sandbox_file_list* list = NULL;
  char* data = NULL;
  size_t len = 0;
  const char* out;
  sandbox_session_options opts;
  sandbox_session_options_init(&opts);
  const char* env[] = {"BASE=40", NULL};
  opts.env = env;
  if (sandbox_session_create(client, &opts, &session, &error) != 0)
    SESSION_FAIL("create: %s: %s", sandbox_error_code(error), sandbox_error_message(error));
  const char* set = "import os\nx = int(os.environ['BASE']) + 1";
  if (sandbox_session_exec(session, set, strlen(set), 0, NULL, NULL, &result, &error) != 0)
    SESSION_FAIL("exec: %s", sandbox_error_message(error));
  sandbox_result_free(result);
  result = NULL;
  if (sandbox_session_write_file(session, "data/in.txt", "hello", 5, 0, &error) != 0)
    SESSION_FAIL("write_file: %s", sandbox_error_message(error));
  /* Another handle on the same session, by id. */
  again = sandbox_session_open(client, sandbox_session_id(session));
  const char* use = "print(x + 1, open('data/in.txt').read())\nopen('data/out.bin', 'wb').write(b'\\x00\\xffok')";
  if (sandbox_session_exec(again, use, strlen(use), 5000, NULL, NULL, &result, &error) != 0)
    SESSION_FAIL("exec by id: %s", sandbox_error_message(error));
  out = sandbox_result_stdout(result, &len);
  if (len != 9 || memcmp(out, "42 hello\n", 9) != 0 || sandbox_result_state_lost(result))
    SESSION_FAIL("state not kept: stdout '%.*s'", (int)len, out);
  if (sandbox_session_read_file(session, "data/out.bin", &data, &len, &error) != 0)
    SESSION_FAIL("read_file: %s", sandbox_error_message(error));
  if (len != 4 || memcmp(data, "\0\xffok", 4) != 0) SESSION_FAIL("read_file returned %zu other bytes", len);
  if (sandbox_session_list_files(session, "data", &list, &error) != 0)
    SESSION_FAIL("list_files: %s", sandbox_error_message(error));
  size_t in = sandbox_file_list_count(list);
  for (size_t i = 0; i < sandbox_file_list_count(list); ++i)
    if (strcmp(sandbox_file_list_name(list, i), "in.txt") == 0) in = i;
  if (sandbox_file_list_count(list) != 2 || in == 2 || sandbox_file_list_size(list, in) != 5 ||
      sandbox_file_list_is_dir(list, in) || sandbox_file_list_name(list, 2) != NULL)
    SESSION_FAIL("list_files: %zu entries, first '%s'", sandbox_file_list_count(list), sandbox_file_list_name(list, 0));
  if (sandbox_session_write_file(session, "../escape", "x", 1, 0, &error) == 0 ||
      strcmp(sandbox_error_code(error), "invalid_argument") != 0)
    SESSION_FAIL("a path climbing out of home was not invalid_argument");
  sandbox_error_free(error);
  error = NULL;
  if (sandbox_session_close(session, &error) != 0) SESSION_FAIL("close: %s", sandbox_error_message(error));
  sandbox_result_free(result);
  result = NULL;
  if (sandbox_session_exec(again, "1", 1, 0, NULL, NULL, &result, &error) == 0 ||
      strcmp(sandbox_error_code(error), "session_closed") != 0)
    SESSION_FAIL("an exec after close was not session_closed");
  failed = 0;
done:
  if (failed && session) sandbox_session_close(session, NULL);
  free(data);
  sandbox_file_list_free(list);
  sandbox_result_free(result);
  sandbox_error_free(error);
  sandbox_session_free(again);
  sandbox_session_free(session);
  sandbox_client_free(client);
  return failed;
}

/* The image description through C: JSON naming the three images and the
 * interpreters; a NULL argument is a typed error. Then the metrics text. */
int c_api_images_check(const char* socket_path, char* why, size_t why_len) {
  sandbox_client* client = sandbox_client_new(socket_path);
  char* json = NULL;
  sandbox_error* error = NULL;
  int failed = 1;
  if (sandbox_images_json(client, &json, &error) != 0) {
    snprintf(why, why_len, "images: %s: %s", sandbox_error_code(error), sandbox_error_message(error));
  } else if (!strstr(json, "\"role\":\"kernel\"") || !strstr(json, "\"role\":\"rootfs\"") ||
             !strstr(json, "\"name\":\"python3\"") || !strstr(json, "\"kernel_release\":")) {
    snprintf(why, why_len, "images JSON lacks a role, python3 or the kernel release: %.200s", json);
  } else if (sandbox_images_json(client, NULL, &error) == 0 || strcmp(sandbox_error_code(error), "invalid_argument") != 0) {
    snprintf(why, why_len, "a NULL json pointer was not invalid_argument");
  } else {
    failed = 0;
  }
  /* The metrics, as sandboxctl metrics prints them. */
  char* text = NULL;
  if (!failed && (sandbox_metrics_text(client, &text, NULL) != 0 || !strstr(text, "# TYPE sandboxd_runs_total counter"))) {
    snprintf(why, why_len, "metrics text missing or without sandboxd_runs_total");
    failed = 1;
  }
  free(text);
  free(json);
  sandbox_error_free(error);
  sandbox_client_free(client);
  return failed;
}
