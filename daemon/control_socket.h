// The Unix-socket transport: framing, peer authentication (SO_PEERCRED on
// every connection), and the mapping of protocol messages to Manager calls.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/manager.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

struct AccessPolicy {
  std::vector<uid_t> allowed_uids;
  std::vector<gid_t> allowed_gids;
  uid_t daemon_uid = 0;
};

// Root and the daemon's own uid always; else a listed uid, or membership
// (primary or supplementary) in a listed group.
bool peer_allowed(const AccessPolicy& policy, const Caller& peer, const std::vector<gid_t>& peer_groups);

class Connection;

class ControlServer {
 public:
  ControlServer(uv_loop_t* loop, Manager& manager, AccessPolicy policy);
  ~ControlServer();
  // Binds and listens; a stale socket file from a dead daemon is replaced,
  // a live one is an error.
  Result<void> listen(const std::string& path, unsigned mode);
  // Stops accepting new connections; existing ones keep being served.
  void stop_listening();
  // Stops accepting and closes every connection once its queued replies are
  // written (their runs, if any, are cancelled).
  void close();

 private:
  friend class Connection;
  void on_connection();
  void remove(Connection* c);

  uv_loop_t* loop_;
  Manager& manager_;
  AccessPolicy policy_;
  std::string path_;
  UvHandle<uv_pipe_t> server_;
  std::set<std::shared_ptr<Connection>> connections_;
};

}  // namespace sandbox::daemon
