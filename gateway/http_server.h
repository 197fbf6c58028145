// What sandbox-gateway and sandbox-router share as HTTP servers: the
// worker pool and limits, a JSON 500 for anything thrown, a log line per
// request that keeps download tokens out, and binding.
#pragma once

#include <httplib.h>

#include <cstddef>
#include <string>

namespace sandbox::gateway {

// --listen's HOST:PORT ("[::1]:8000" for IPv6); false if it is not one.
bool parse_listen(const std::string& value, std::string* host, int* port);

void configure_server(httplib::Server& server, size_t threads, size_t max_payload);

// Binds `host`:`port` (0: a free port). The port bound, or -1 with the
// reason said on stderr under `program`'s name.
int bind_server(httplib::Server& server, const std::string& host, int port, const char* program);

}  // namespace sandbox::gateway
