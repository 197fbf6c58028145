// Where the routing gateway sends work, as pure functions of what it knows
// about its nodes: rendezvous hashing of a run's cache key (language and
// package set) with a load bound, else the less loaded of two random ready
// nodes; and the session ids that name their node, so that a session's
// calls find it without a shared catalog.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sandbox::gateway {

// What placement needs to know of one node.
struct NodeLoad {
  std::string tag;  // stable name of the node (node_tag of its address)
  uint32_t load = 0;
};

// A node's tag: 8 hex digits of a hash of its address ("host:port"), the
// same on every router that discovers it at that address.
std::string node_tag(std::string_view address);

// The rendezvous ("highest random weight") score of `node` for `key`.
uint64_t rendezvous_score(std::string_view node_tag, std::string_view key);

// The load a key's preferred node may carry before work spills elsewhere:
// `factor` times the mean load after this placement, at least 1. 1.25 keeps
// a hot key on its warm node until that node holds a quarter more than its
// share (bounded-load consistent hashing).
inline constexpr double kDefaultLoadFactor = 1.25;
uint32_t load_bound(const std::vector<NodeLoad>& ready, double factor);

// The order in which to try the ready nodes for a run with cache key `key`
// (indices into `ready`): first the key's rendezvous winner if within the
// load bound, else the less loaded of two picked by `random` (which returns
// a number in [0, n)); then every other node, least loaded first, for when
// the first answers `capacity` or cannot be reached. Empty when no node is
// ready.
std::vector<size_t> placement_order(const std::vector<NodeLoad>& ready, std::string_view key, double factor,
                                    const std::function<size_t(size_t)>& random);

// The cache key of a run: its language and its sorted package specs (the
// daemon's warm pool and snapshots are per language; layers per set).
std::string cache_key(std::string_view language, std::vector<std::string> packages);

// Session ids the router hands out: "n" + node tag + "-" + the node's own
// id. The node's id keeps the node gateway's alphabet ([A-Za-z0-9_-]).
inline constexpr size_t kMaxNodeSessionId = 64;
std::string routed_session_id(std::string_view tag, std::string_view node_session);
struct RoutedSession {
  std::string tag;
  std::string node_session;
};
// nullopt for an id this router did not hand out (wrong shape or alphabet).
std::optional<RoutedSession> parse_routed_session(std::string_view id);

}  // namespace sandbox::gateway
