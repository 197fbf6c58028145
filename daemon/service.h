// The one request path. Both transports (the control socket and D-Bus)
// turn what a peer sends into proto messages and hand them here, as one
// call per request; this layer owns access, defaults, validation, limits
// per peer, what each peer has in flight, and cancelling it when the peer
// goes. Transports keep only their framing or marshalling.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <sandbox/limits.h>

#include "daemon/access.h"
#include "daemon/budget.h"
#include "daemon/manager.h"

#include "common/packages.h"

namespace sandbox::daemon {

struct ServiceOptions {
  AccessPolicy access;
  // What a request that leaves a value at 0 gets: the public defaults
  // (limits.h), and the configured idle timeout.
  std::chrono::milliseconds default_timeout{limits::kDefaultTimeoutMs};
  uint32_t default_memory_mb = limits::kDefaultMemoryMb;
  std::chrono::milliseconds default_idle_timeout{};
  // Requests one peer may have in flight (each runs, waits or uploads).
  size_t max_requests_per_peer = 64;
  // Upload data held until its session takes it: three full files per uid.
  uint64_t upload_bytes_per_uid = 160ull << 20;
  uint64_t upload_bytes_total = 640ull << 20;
  // What the VMs boot, as verified at start-up: `images_request` answers it.
  ImagesInfo images;
  // What `network` with no domains of its own means (empty: refused).
  std::vector<std::string> default_domains;
  // Which package requests are accepted (pinning, allowlist, count).
  PackagePolicy packages;
  // How long a drain that names no deadline lets runs and sessions go on.
  std::chrono::milliseconds default_drain_deadline{600'000};
};

class Service {
 public:
  // A transport's peer (a socket connection, a bus call) and what it has
  // in flight. Its requests' answers go to the peer's Sink.
  class Peer;

  Service(Manager& manager, ServiceOptions options);
  ~Service();

  // Whether `caller` may use the service at all (permission_denied if not).
  Result<void> authorize(const Caller& caller, std::optional<gid_t> kernel_gid) const;
  std::shared_ptr<Peer> connect(const Caller& caller, std::weak_ptr<Sink> sink);
  // One request from `peer`. Answers (and errors) go to the peer's sink,
  // possibly before this returns. False for a message no client may send:
  // the transport should then drop the peer.
  bool handle(Peer& peer, proto::Message&& request);
  // The peer is gone: its runs, sessions still opening, waiting jobs and
  // running execs are cancelled; its partial uploads are dropped.
  void disconnect(Peer& peer);
  // Requests the peer has in flight.
  size_t in_flight(const Peer& peer) const;

  DaemonStatus status() const { return manager_.status(); }
  std::string metrics_text() const { return manager_.metrics_text(); }
  const ServiceOptions& options() const { return options_; }
  // `network` alone: the operator's default allowlist, or an error saying there is none.
  Result<void> network_defaults(NetworkRequest& net) const;
  Result<void> package_policy(Language language, std::vector<std::string>& packages) const;
  uint64_t upload_bytes() const { return uploads_.used(); }

 private:
  struct InFlight;
  enum class Kind { lease, job, close, upload };
  class RequestSink;
  void reply(Peer& peer, proto::Message&& m);
  void error(Peer& peer, uint64_t id, const Error& e);
  // Counts and audits a refused request.
  void denied(const Caller& caller, std::string_view request, ErrorCode code) const;
  // Records request `id` of `peer`, or answers why it cannot be taken.
  InFlight* begin(Peer& peer, uint64_t id, Kind kind);
  void on_run(Peer& peer, proto::Run&& run);
  void on_create(Peer& peer, proto::SessionCreate&& create);
  void on_session_job(Peer& peer, uint64_t id, proto::Message&& request);
  void on_file_write(Peer& peer, proto::FileWrite&& write);
  void on_file_chunk(Peer& peer, proto::FileChunk&& chunk);

  Manager& manager_;
  ServiceOptions options_;
  ByteBudget uploads_;
  uint64_t next_token_ = 1;
  std::string_view request_type_ = "connect";  // the wire type being handled, for refusals
};

}  // namespace sandbox::daemon
