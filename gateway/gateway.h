// sandbox-gateway's HTTP surface: python-sandbox's POST /execute and
// GET /health, /v1/runs (NDJSON streaming), /v1/sessions, /metrics,
// /files/<token> and /openapi.json. Every call to the daemon goes through
// libsandbox; the gateway holds no privilege of its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "gateway/file_store.h"
#include "gateway/tokens.h"

namespace sandbox::gateway {

struct Options {
  std::string host = "127.0.0.1";  // loopback unless configured otherwise
  int port = 8000;
  std::string tokens_file;
  std::string socket;  // empty: $SANDBOXD_SOCKET, else the default
  // JSON request bodies: a run's code is at most 1 MB, and JSON escaping
  // may double it.
  size_t max_body = 2 << 20;
  // File uploads to a session: the largest file the daemon takes.
  size_t max_upload = 50 << 20;
  size_t threads = 32;
  // /execute's files from /tmp/output: count, each, all of one response.
  size_t max_files = 20;
  uint64_t max_file_bytes = 10 << 20;
  uint64_t max_files_bytes = 50 << 20;
  uint64_t store_bytes = 512ull << 20;  // files held for download at once
  std::chrono::seconds file_ttl{600};
  std::chrono::milliseconds default_timeout{30'000};
  bool metrics_public = false;  // /metrics from other than loopback
  std::string base_url;         // of download links; default http://HOST:PORT
  size_t max_sessions = 1024;   // sessions the gateway keeps owners for
};

// Serves until the process is stopped; returns an exit status.
int serve(Options options, Tokens tokens);

}  // namespace sandbox::gateway
