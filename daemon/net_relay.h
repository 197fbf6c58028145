// One VM's network, on the host: the daemon end of the network channel
// (common/net_frame.h). It is the enforcement point of SPEC F11-F13: it
// answers the guest's DNS (allowed names only, from the configured
// resolver; their addresses become this VM's pin set), admits a guest
// connection only to a pinned address on an allowed port with a matching
// TLS SNI or HTTP Host, dials the checked address itself, and relays
// connections from the host's exposed ports into the guest. The guest
// decides nothing.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <sandbox/types.h>

#include "common/net_frame.h"
#include "common/net_rules.h"
#include "common/unique_fd.h"
#include "daemon/net_ranges.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

// Daemon-wide network settings, from Config (options.cc).
struct NetConfig {
  // "ADDRESS:PORT" of the resolver allowed names are looked up with; empty:
  // the host's own (getaddrinfo).
  std::string resolver;
  // Special-purpose ranges the operator lets VMs reach (tests: 127.0.0.0/8).
  std::vector<Cidr> allowed_ranges;
  // What `network` with no list of its own means.
  std::vector<std::string> default_domains;
  uint32_t max_connections = 64;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds idle_timeout{300'000};
  std::chrono::milliseconds dns_timeout{3'000};
  // Where Unix-socket ports go (a sticky directory, mode 1733, each user's
  // sockets in a 0700 directory of their own); empty: not offered.
  std::string expose_dir;
};

class NetRelay {
 public:
  NetRelay(uv_loop_t* loop, const NetConfig* config, std::string vm_name);
  ~NetRelay();
  NetRelay(const NetRelay&) = delete;
  NetRelay& operator=(const NetRelay&) = delete;

  Result<void> open(unique_fd channel);
  // Puts `policy` in force: host listeners for its ports at once (bound
  // ports kept across changes), the guest's listeners and routes when the
  // guest acknowledges (then `done`). `who` names the caller in log lines.
  Result<void> configure(NetPolicy policy, std::string who, std::function<void(Result<void>)> done);
  const std::vector<ExposedPort>& exposed() const { return exposed_; }
  // What happened since the last call.
  NetworkStats take_stats();

  struct Conn;

 private:
  friend struct Conn;
  void on_bytes(std::string_view bytes);
  void on_frame(net::Frame&& f);
  void send(net::FrameType t, uint32_t stream, std::string_view payload = {});
  void fail(const std::string& why);
  void on_guest_open(uint32_t id, std::string_view payload);
  void on_dns_query(uint32_t tag, std::string_view message);
  void answer_dns(uint32_t tag, const std::string& answer);
  void resolve(const std::string& name, uint16_t qtype, std::function<void(std::vector<std::string>)> done);
  void on_expose_accept(uv_stream_t* server, uint32_t guest_port);
  void judge(Conn& c);
  void judge_proxy(Conn& c);
  void judge_socks(Conn& c);
  // A proxy's target by name: resolved here and pinned, then `admitted`
  // (the proxy's own answer to its client) and the stream goes on as a
  // direct connection to that address.
  void connect_named(Conn& c, const std::string& name, uint16_t port, std::function<void(Conn&)> admitted);
  // After a stream's address and port are set: web ports wait for the name
  // in their first bytes, others are admitted for a pinned name.
  void admit_or_judge(Conn& c);
  // Takes a proxy request's own bytes out of the stream, crediting them back.
  void consume_early(Conn& c, size_t n);
  void flush_early(Conn& c);
  void sniff(Conn& c);
  void answer_guest(Conn& c, std::string_view bytes);
  void dial(Conn& c, const std::string& name);
  void deny(uint32_t id, const std::string& host, uint16_t port, const std::string& reason);
  void record_denial(const std::string& host, uint16_t port, const std::string& reason);
  void drop(uint32_t id);
  void read_peer(Conn& c);
  void log_decision(const Conn* c, std::string_view name, std::string_view sni, std::string_view address,
                    uint16_t port, std::string_view decision, std::string_view rule, std::string_view why);

  uv_loop_t* loop_;
  const NetConfig* config_;
  std::string vm_name_, who_;
  UvHandle<uv_pipe_t> channel_;
  net::FrameReader reader_;
  bool failed_ = false;
  NetPolicy policy_;
  std::function<void(Result<void>)> policy_done_;
  std::vector<ExposedPort> exposed_;
  struct Listener {
    ~Listener();
    NetRelay* relay = nullptr;
    uint32_t guest_port = 0;
    UvHandle<uv_tcp_t> tcp;
    UvHandle<uv_pipe_t> pipe;  // a Unix-socket port
    std::string path;
    uid_t owner = 0;
  };
  Result<std::string> listen_unix(Listener& l, uid_t owner);
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::map<uint32_t, std::shared_ptr<Conn>> conns_;
  uint32_t next_id_ = 2;  // the host's streams are even
  // Address (raw bytes) -> the allowed names whose answers held it.
  std::map<std::string, std::set<std::string>> pins_;
  size_t dns_pending_ = 0;
  NetworkStats stats_;
  std::chrono::steady_clock::time_point log_window_{};
  uint32_t log_denials_ = 0, log_suppressed_ = 0;
  std::shared_ptr<NetRelay*> alive_;  // async callbacks check it
};

}  // namespace sandbox::daemon
