// Whether the HTTP client of a request is still there. cpp-httplib hands
// a handler no socket, so the connection is found by its addresses among
// the process's descriptors, then polled for a hang-up: a run whose caller
// went away is cancelled rather than left to finish for nobody.
#pragma once

#include <string>

namespace sandbox::gateway {

class PeerWatch {
 public:
  // The connection from remote_addr:remote_port to local_port (-1: not found).
  PeerWatch(const std::string& remote_addr, int remote_port, int local_port);
  // True once the client has closed or reset its end.
  bool gone() const;
  bool found() const { return fd_ >= 0; }

 private:
  int fd_ = -1;  // borrowed: the server owns and closes it after the handler
};

}  // namespace sandbox::gateway
