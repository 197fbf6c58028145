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
  sandbox_client_free(client);
  return 0;
}
