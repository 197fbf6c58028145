// The Unix-socket transport: framing, peer identity (SO_PEERCRED on every
// connection) and the bounds that keep one local user from exhausting the
// daemon: connections in all and per uid, an idle deadline, a deadline to
// finish a frame begun, bytes buffered for partial frames and for replies
// the client has not read. What each request means is the service's.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <sandbox/result.h>

#include "daemon/budget.h"
#include "daemon/log.h"
#include "daemon/service.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

// The configurable bounds come from Config (config.h) through options_from
// (options.h); the byte bounds are fixed here, each with its reason.
struct ControlLimits {
  uint32_t max_connections = 0;
  uint32_t max_connections_per_uid = 0;
  std::chrono::milliseconds idle_timeout{};
  std::chrono::milliseconds frame_timeout{};
  // Replies queued for a connection: past `pause` it is not read from
  // until they drain to half; past `drop` the client is cut off (it does
  // not read what it asked for).
  size_t pause_bytes = 1 << 20;
  size_t drop_bytes = 64 << 20;
  // Partial frames held, per uid and in all.
  uint64_t receive_bytes_per_uid = 32ull << 20;
  uint64_t receive_bytes_total = 256ull << 20;
  // Replies queued, per uid and in all.
  uint64_t send_bytes_per_uid = 128ull << 20;
  uint64_t send_bytes_total = 512ull << 20;
};

class Connection;

class ControlServer {
 public:
  ControlServer(uv_loop_t* loop, Service& service, ControlLimits limits);
  ~ControlServer();
  // Binds and listens with `mode` and (if set) group `gid`, all set up in a
  // private directory and renamed into place, so the socket is never
  // reachable with other permissions. A stale socket file from a dead
  // daemon is replaced, a live one is an error.
  Result<void> listen(const std::string& path, unsigned mode, std::optional<gid_t> gid);
  // Stops accepting new connections; existing ones keep being served.
  void stop_listening();
  // Stops accepting and closes every connection once its queued replies are
  // written (what they have in flight is cancelled).
  void close();
  // Connections being served (refused ones still closing are not).
  size_t connections() const { return served_; }

 private:
  friend class Connection;
  void on_connection(int status);
  void remove(Connection* c);

  uv_loop_t* loop_;
  Service& service_;
  ControlLimits limits_;
  std::string path_;
  UvHandle<uv_pipe_t> server_;
  std::set<std::shared_ptr<Connection>> connections_;
  uint32_t served_ = 0;
  std::map<uid_t, uint32_t> per_uid_;
  ByteBudget receive_budget_;
  ByteBudget send_budget_;
  LogRateLimit refused_log_{10, std::chrono::seconds(60)};
  LogRateLimit accept_log_{10, std::chrono::seconds(60)};
  Deferred later_;
};

}  // namespace sandbox::daemon
