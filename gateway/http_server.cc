#include "gateway/http_server.h"

#include <cstdio>

namespace sandbox::gateway {

void configure_server(httplib::Server& server, size_t threads, size_t max_payload) {
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_payload_max_length(max_payload);
  server.set_read_timeout(30, 0);
  server.set_keep_alive_max_count(100);
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    res.status = 500;
    res.set_content("{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}", "application/json");
  });
  server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    // A download link is a capability: its token stays out of the log.
    std::string path = req.path.rfind("/files/", 0) == 0 ? "/files/..." : req.path.substr(0, 200);
    for (char& c : path)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    std::fprintf(stderr, "%s %s %d %s\n", req.method.c_str(), path.c_str(), res.status, req.remote_addr.c_str());
  });
}

int bind_server(httplib::Server& server, const std::string& host, int port, const char* program) {
  if (port == 0) {
    port = server.bind_to_any_port(host);
    if (port < 0) std::fprintf(stderr, "%s: cannot listen on %s\n", program, host.c_str());
    return port;
  }
  if (!server.bind_to_port(host, port)) {
    std::fprintf(stderr, "%s: cannot listen on %s:%d\n", program, host.c_str(), port);
    return -1;
  }
  return port;
}

}  // namespace sandbox::gateway
