// sandbox-router: one HTTP address in front of many sandboxd nodes, each
// with its own sandbox-gateway. It accepts the node gateway's API, finds
// the nodes through DNS SRV records and/or a static list, keeps those whose
// /health answers ready (and not draining) in rotation, places each run or
// session (placement.h) and forwards the request with the caller's bearer
// token: the nodes authorize, the router holds no token list of its own.
// Sessions stay on their node through the id the router hands out.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "gateway/placement.h"

namespace sandbox::gateway {

struct RouterOptions {
  std::string host = "127.0.0.1";  // loopback unless configured otherwise
  int port = 8080;
  std::vector<std::string> static_nodes;  // "HOST:PORT" of node gateways
  std::string srv_name;                   // e.g. _sandbox._tcp.service.consul
  std::string dns_server;                 // "IP:PORT" asked for srv_name
  // Readiness polls; a node that fails one, or a forwarded request's
  // connection, leaves rotation until a poll succeeds again.
  std::chrono::milliseconds health_interval{1000};
  std::chrono::milliseconds health_timeout{1000};
  std::chrono::milliseconds discovery_interval{5000};
  double load_factor = kDefaultLoadFactor;
  size_t threads = 64;
  size_t max_body = 2 << 20;     // JSON bodies, as the node gateway
  size_t max_upload = 50 << 20;  // session file uploads, as the node gateway
  // A node's answer held in memory (non-streamed): an upload's worth plus room.
  size_t max_reply = (50 << 20) + (1 << 20);
  bool metrics_public = false;
  std::string base_url;  // of rewritten download links; default http://HOST:PORT
};

// Serves until the process is stopped; returns an exit status.
int serve_router(RouterOptions options);

}  // namespace sandbox::gateway
