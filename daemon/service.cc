#include "daemon/service.h"


#include <deque>

#include <sandbox/limits.h>

#include "common/files.h"
#include "common/net_rules.h"
#include "common/validate.h"
#include "daemon/audit.h"
#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

// Output and file chunks come before a request's one final answer.
bool is_final(const proto::Message& m) {
  return !std::holds_alternative<proto::Output>(m) && !std::holds_alternative<proto::FileChunk>(m);
}

// The session a session request names.
std::string session_of(const proto::Message& m) {
  return std::visit(
      [](const auto& v) -> std::string {
        if constexpr (requires { { v.session } -> std::convertible_to<std::string>; }) return v.session;
        return {};
      },
      m);
}

}  // namespace

// A request in flight: what to cancel if its peer goes, and, for an
// upload, the data received so far.
struct Service::InFlight {
  Kind kind = Kind::lease;
  LeaseId lease = 0;
  std::string session;
  uint64_t token = 0;
  std::shared_ptr<RequestSink> sink;
  // Uploads: the header, the chunks so far and the budget they take.
  std::optional<proto::FileWrite> header;
  std::vector<std::string> chunks;
  uint64_t received = 0;
  std::optional<ByteBudget::Hold> hold;
};

class Service::Peer : public std::enable_shared_from_this<Peer> {
 public:
  Peer(Caller caller, std::weak_ptr<Sink> sink) : caller(caller), sink(std::move(sink)) {}
  Caller caller;
  std::weak_ptr<Sink> sink;
  std::map<uint64_t, InFlight> requests;
  // Ids of refused uploads (bounded): their chunks are dropped, not errors.
  std::deque<uint64_t> discarding;
};

// Passes a request's answers to its peer, and forgets the request at its
// final answer. Leases hold it weakly: once the peer is gone, nothing is
// delivered.
class Service::RequestSink : public Sink {
 public:
  RequestSink(std::weak_ptr<Peer> peer, uint64_t id) : peer_(std::move(peer)), id_(id) {}
  void deliver(proto::Message&& m) override {
    auto peer = peer_.lock();
    if (!peer) return;
    std::shared_ptr<RequestSink> keep;  // the entry erased below owns this object
    if (is_final(m))
      if (auto it = peer->requests.find(id_); it != peer->requests.end()) {
        keep = std::move(it->second.sink);
        peer->requests.erase(it);
      }
    if (auto out = peer->sink.lock()) out->deliver(std::move(m));
  }

 private:
  std::weak_ptr<Peer> peer_;
  uint64_t id_;
};

Service::Service(Manager& manager, ServiceOptions options)
    : manager_(manager),
      options_(std::move(options)),
      uploads_(options_.upload_bytes_per_uid, options_.upload_bytes_total, "uploads waiting for their session") {}

Service::~Service() = default;

Result<void> Service::authorize(const Caller& caller, std::optional<gid_t> kernel_gid) const {
  if (peer_allowed(options_.access, caller.uid, groups_of(caller.uid, kernel_gid))) return ok();
  denied(caller, "connect", ErrorCode::permission_denied);
  return Error::make(ErrorCode::permission_denied,
                     "uid " + std::to_string(caller.uid) + " is not allowed to use sandboxd");
}

void Service::denied(const Caller& caller, std::string_view request, ErrorCode code) const {
  manager_.metrics().denied(code);
  manager_.metrics().error(code);
  AuditEntry e;
  e.kind = AuditKind::denial;
  e.uid = caller.uid;
  e.request = std::string(request);
  e.result = "refused";
  e.error = code;
  audit(e);
}

std::shared_ptr<Service::Peer> Service::connect(const Caller& caller, std::weak_ptr<Sink> sink) {
  return std::make_shared<Peer>(caller, std::move(sink));
}

size_t Service::in_flight(const Peer& peer) const { return peer.requests.size(); }

void Service::reply(Peer& peer, proto::Message&& m) {
  if (auto out = peer.sink.lock()) out->deliver(std::move(m));
}

// Every error this layer sends is a refusal: the request never reached a
// VM (what goes wrong later comes from the lease, through its sink).
void Service::error(Peer& peer, uint64_t id, const Error& e) {
  denied(peer.caller, request_type_, e.code);
  reply(peer, proto::ErrorReply{id, e.code, e.message});
}

Service::InFlight* Service::begin(Peer& peer, uint64_t id, Kind kind) {
  if (peer.requests.count(id)) {
    error(peer, id, Error::make(ErrorCode::invalid_argument, "request id " + std::to_string(id) + " is already in use"));
    return nullptr;
  }
  if (peer.requests.size() >= options_.max_requests_per_peer) {
    error(peer, id, Error::make(ErrorCode::capacity, "already " + std::to_string(peer.requests.size()) +
                                                         " requests in flight on this connection (the limit)"));
    return nullptr;
  }
  auto& entry = peer.requests[id];
  entry.kind = kind;
  entry.sink = std::make_shared<RequestSink>(peer.weak_from_this(), id);
  return &entry;
}

bool Service::handle(Peer& peer, proto::Message&& request) {
  uint64_t id = proto::request_id_of(request);
  request_type_ = proto::type_name(request);
  if (auto* st = std::get_if<proto::StatusRequest>(&request)) {
    reply(peer, proto::Status{st->id, manager_.status()});
  } else if (auto* sr = std::get_if<proto::SnapshotsRequest>(&request)) {
    // Emptying the cache slows everyone down: an operator's call.
    if (sr->drop && !is_operator(options_.access, peer.caller.uid))
      error(peer, id, Error::make(ErrorCode::permission_denied, "only root may drop snapshots"));
    else
      reply(peer, proto::SnapshotList{id, manager_.snapshots(sr->drop)});
  } else if (auto* dr = std::get_if<proto::Drain>(&request)) {
    // Taking a node out of rotation is an operator's call.
    if (!is_operator(options_.access, peer.caller.uid))
      return error(peer, id, Error::make(ErrorCode::permission_denied, "only root may drain sandboxd")), true;
    manager_.drain_for_rollout(dr->deadline_ms ? std::chrono::milliseconds(dr->deadline_ms) : options_.default_drain_deadline);
    reply(peer, proto::Status{id, manager_.status()});
  } else if (std::holds_alternative<proto::ImagesRequest>(request)) {
    reply(peer, proto::ImageList{id, options_.images});
  } else if (auto* lr = std::get_if<proto::LayersRequest>(&request)) {
    // Dropping layers makes every user rebuild: an operator's call.
    if ((lr->drop_all || !lr->drop.empty()) && !is_operator(options_.access, peer.caller.uid))
      error(peer, id, Error::make(ErrorCode::permission_denied, "only root may drop package layers"));
    else if (auto layers = manager_.layers(lr->drop, lr->drop_all); !layers)
      error(peer, id, layers.error());
    else
      reply(peer, proto::LayerList{id, std::move(*layers)});
  } else if (std::holds_alternative<proto::MetricsRequest>(request)) {
    reply(peer, proto::MetricsText{id, manager_.metrics_text()});
  } else if (std::holds_alternative<proto::SessionListRequest>(request)) {
    reply(peer, proto::SessionList{id, manager_.sessions(peer.caller)});
  } else if (auto* run = std::get_if<proto::Run>(&request)) {
    on_run(peer, std::move(*run));
  } else if (auto* create = std::get_if<proto::SessionCreate>(&request)) {
    on_create(peer, std::move(*create));
  } else if (auto* write = std::get_if<proto::FileWrite>(&request)) {
    on_file_write(peer, std::move(*write));
  } else if (auto* chunk = std::get_if<proto::FileChunk>(&request)) {
    on_file_chunk(peer, std::move(*chunk));
  } else if (std::holds_alternative<proto::SessionExec>(request) || std::holds_alternative<proto::SessionClose>(request) ||
             std::holds_alternative<proto::FileRead>(request) ||
             std::holds_alternative<proto::FileListRequest>(request) ||
             std::holds_alternative<proto::SessionNetwork>(request)) {
    on_session_job(peer, id, std::move(request));
  } else {
    error(peer, 0, Error::make(ErrorCode::invalid_argument,
                               "a client may not send '" + std::string(proto::type_name(request)) +
                                   "' (only run, session, file, status, snapshot, image, layer, metrics and drain requests)"));
    return false;
  }
  return true;
}

Result<void> Service::network_defaults(NetworkRequest& net) const {
  if (!net.network || !net.allowed_domains.empty()) return ok();
  if (options_.default_domains.empty())
    return Error::make(ErrorCode::invalid_argument,
                       "network without domains means the operator's default allowlist (default_allowed_domains), "
                       "which is empty on this host: name the domains to allow");
  net.allowed_domains = options_.default_domains;
  return ok();
}

// The operator's package policy, and the canonical sorted form that the
// builder and the layer key take; nothing starts for a refused list.
Result<void> Service::package_policy(Language language, std::vector<std::string>& packages) const {
  auto specs = parse_packages(language, packages, options_.packages);
  if (!specs) return std::move(specs).error();
  packages = canonical_packages(*specs);
  return ok();
}

void Service::on_run(Peer& peer, proto::Run&& run) {
  auto& r = run.request;
  if (auto v = network_defaults(r.net); !v) return error(peer, run.id, v.error());
  if (r.timeout.count() == 0) r.timeout = options_.default_timeout;
  if (r.memory_mb == 0) r.memory_mb = options_.default_memory_mb;
  if (auto v = validate(r); !v) return error(peer, run.id, v.error());
  if (auto v = package_policy(r.language, r.packages); !v) return error(peer, run.id, v.error());
  auto* entry = begin(peer, run.id, Kind::lease);
  if (!entry) return;
  auto lease = manager_.run(peer.caller, run.id, std::move(r), entry->sink);
  if (!lease) {
    peer.requests.erase(run.id);
    return error(peer, run.id, lease.error());
  }
  entry->lease = *lease;
}

void Service::on_create(Peer& peer, proto::SessionCreate&& create) {
  auto& o = create.options;
  if (auto v = network_defaults(o.net); !v) return error(peer, create.id, v.error());
  if (o.timeout.count() == 0) o.timeout = options_.default_timeout;
  if (o.memory_mb == 0) o.memory_mb = options_.default_memory_mb;
  if (o.idle_timeout.count() == 0) o.idle_timeout = options_.default_idle_timeout;
  if (auto v = validate(o); !v) return error(peer, create.id, v.error());
  if (auto v = package_policy(o.language, o.packages); !v) return error(peer, create.id, v.error());
  // Until it is open, a session dies with the peer that asked for it.
  auto* entry = begin(peer, create.id, Kind::lease);
  if (!entry) return;
  auto lease = manager_.open_session(peer.caller, create.id, std::move(o), entry->sink);
  if (!lease) {
    peer.requests.erase(create.id);
    return error(peer, create.id, lease.error());
  }
  entry->lease = *lease;
}

void Service::on_session_job(Peer& peer, uint64_t id, proto::Message&& request) {
  if (auto* exec = std::get_if<proto::SessionExec>(&request))
    if (auto v = validate_exec(exec->code, std::chrono::milliseconds(exec->timeout_ms)); !v) return error(peer, id, v.error());
  if (auto* read = std::get_if<proto::FileRead>(&request))
    if (auto v = validate_guest_path(read->path, false); !v) return error(peer, id, v.error());
  if (auto* list = std::get_if<proto::FileListRequest>(&request))
    if (auto v = validate_guest_path(list->path, true); !v) return error(peer, id, v.error());
  if (auto* net = std::get_if<proto::SessionNetwork>(&request)) {
    NetworkRequest n{net->network, net->allowed_domains, {}};
    if (auto v = network_defaults(n); !v) return error(peer, id, v.error());
    if (auto v = validate_network(n); !v) return error(peer, id, v.error());
    net->allowed_domains = std::move(n.allowed_domains);
  }
  // A close goes ahead even if its caller leaves; anything else is dropped
  // or stopped.
  bool close = std::holds_alternative<proto::SessionClose>(request);
  auto* entry = begin(peer, id, close ? Kind::close : Kind::job);
  if (!entry) return;
  entry->session = session_of(request);
  entry->token = next_token_++;
  Job job;
  job.request_id = id;
  job.request = std::move(request);
  job.sink = entry->sink;
  job.token = entry->token;
  if (auto r = manager_.submit(peer.caller, entry->session, std::move(job)); !r) {
    peer.requests.erase(id);
    error(peer, id, r.error());
  }
}

void Service::on_file_write(Peer& peer, proto::FileWrite&& write) {
  uint64_t id = write.id;
  auto refuse = [&](const Error& e) {
    peer.discarding.push_back(id);
    if (peer.discarding.size() > options_.max_requests_per_peer) peer.discarding.pop_front();
    error(peer, id, e);
  };
  if (auto v = validate_guest_path(write.path, false); !v) return refuse(v.error());
  auto* entry = begin(peer, id, Kind::upload);
  if (!entry) return refuse(Error::make(ErrorCode::capacity, "upload refused"));
  entry->session = write.session;
  entry->hold = uploads_.open(peer.caller.uid);
  entry->header = std::move(write);
  // An empty file has no chunks: it is complete already.
  if (entry->header->size == 0) on_file_chunk(peer, proto::FileChunk{id, {}});
}

void Service::on_file_chunk(Peer& peer, proto::FileChunk&& chunk) {
  uint64_t id = chunk.id;
  auto it = peer.requests.find(id);
  if (it == peer.requests.end() || it->second.kind != Kind::upload || it->second.token != 0) {
    for (uint64_t d : peer.discarding)
      if (d == id) return;
    return error(peer, id, Error::make(ErrorCode::invalid_argument, "a file chunk for no upload in progress"));
  }
  auto& up = it->second;
  auto fail = [&](const Error& e) {
    peer.requests.erase(it);
    peer.discarding.push_back(id);
    if (peer.discarding.size() > options_.max_requests_per_peer) peer.discarding.pop_front();
    error(peer, id, e);
  };
  if (!chunk.data.empty()) {
    // The client is not trusted with the sizes: every chunk's header is
    // checked, and the total, before anything is forwarded.
    auto n = chunk_content_size(chunk.data);
    if (!n) return fail(n.error());
    if (up.received + *n > up.header->size || up.chunks.size() >= limits::kMaxFileChunks)
      return fail(Error::make(ErrorCode::invalid_argument, "more data than the file's declared size"));
    if (auto r = up.hold->grow(chunk.data.size()); !r) return fail(r.error());
    up.received += *n;
    up.chunks.push_back(std::move(chunk.data));
  }
  if (up.received < up.header->size) return;
  // Complete: the write joins its session's queue like any job.
  up.kind = Kind::job;
  up.token = next_token_++;
  Job job;
  job.request_id = id;
  job.request = std::move(*up.header);
  job.chunks = std::move(up.chunks);
  job.hold = std::move(up.hold);
  job.sink = up.sink;
  job.token = up.token;
  std::string session = up.session;
  if (auto r = manager_.submit(peer.caller, session, std::move(job)); !r) {
    peer.requests.erase(id);
    error(peer, id, r.error());
  }
}

void Service::disconnect(Peer& peer) {
  auto requests = std::exchange(peer.requests, {});
  for (auto& [id, entry] : requests) {
    switch (entry.kind) {
      case Kind::lease: manager_.cancel(entry.lease); break;
      case Kind::job: manager_.cancel_job(entry.session, entry.token); break;
      case Kind::close:
      case Kind::upload: break;
    }
  }
}

}  // namespace sandbox::daemon
