#include "gateway/http_server.h"

#include <charconv>
#include <cstdio>

namespace sandbox::gateway {

bool parse_listen(const std::string& value, std::string* host, int* port) {
  auto colon = value.rfind(':');
  if (colon == std::string::npos) return false;
  unsigned n = 0;
  const char* first = value.data() + colon + 1;
  const char* last = value.data() + value.size();
  auto [end, ec] = std::from_chars(first, last, n);
  if (first == last || ec != std::errc() || end != last || n > 65535) return false;
  *host = value.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  *port = static_cast<int>(n);
  return true;
}

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
