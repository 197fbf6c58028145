#include "gateway/placement.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace sandbox::gateway {

namespace {

// FNV-1a, then a 64-bit finalizer (splitmix64) so that scores of one key on
// nodes with similar tags do not correlate.
uint64_t fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

bool id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

bool hex_char(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

constexpr size_t kTagLength = 8;

}  // namespace

std::string node_tag(std::string_view address) {
  char buf[kTagLength + 1];
  std::snprintf(buf, sizeof buf, "%08x", static_cast<uint32_t>(mix(fnv1a(address))));
  return buf;
}

uint64_t rendezvous_score(std::string_view tag, std::string_view key) {
  // A separator no tag contains, so ("ab","c") and ("a","bc") differ.
  return mix(fnv1a(key, fnv1a("\x1f", fnv1a(tag))));
}

uint32_t load_bound(const std::vector<NodeLoad>& ready, double factor) {
  if (ready.empty()) return 0;
  uint64_t total = 1;  // the run being placed
  for (const auto& n : ready) total += n.load;
  double bound = std::ceil(factor * static_cast<double>(total) / static_cast<double>(ready.size()));
  return static_cast<uint32_t>(std::max(1.0, std::min(bound, 4e9)));
}

std::vector<size_t> placement_order(const std::vector<NodeLoad>& ready, std::string_view key, double factor,
                                    const std::function<size_t(size_t)>& random) {
  std::vector<size_t> order;
  size_t n = ready.size();
  if (n == 0) return order;
  size_t first = n;
  if (!key.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < n; ++i) {
      uint64_t a = rendezvous_score(ready[i].tag, key), b = rendezvous_score(ready[best].tag, key);
      // Ties (equal tags) go to the lower index, so the order is a function of the input.
      if (a > b) best = i;
    }
    if (ready[best].load + 1 <= load_bound(ready, factor)) first = best;
  }
  if (first == n) {
    size_t a = random(n) % n, b = n > 1 ? random(n - 1) % (n - 1) : a;
    if (n > 1 && b >= a) ++b;  // two distinct nodes
    first = ready[b].load < ready[a].load ? b : a;
  }
  order.push_back(first);
  std::vector<size_t> rest;
  for (size_t i = 0; i < n; ++i)
    if (i != first) rest.push_back(i);
  std::stable_sort(rest.begin(), rest.end(), [&](size_t x, size_t y) { return ready[x].load < ready[y].load; });
  order.insert(order.end(), rest.begin(), rest.end());
  return order;
}

std::string cache_key(std::string_view language, std::vector<std::string> packages) {
  std::sort(packages.begin(), packages.end());
  packages.erase(std::unique(packages.begin(), packages.end()), packages.end());
  std::string key(language);
  for (const auto& p : packages) {
    key += '\n';  // package specs hold no newline (the node refuses them)
    key += p;
  }
  return key;
}

std::string routed_session_id(std::string_view tag, std::string_view node_session) {
  return "n" + std::string(tag) + "-" + std::string(node_session);
}

std::optional<RoutedSession> parse_routed_session(std::string_view id) {
  constexpr size_t prefix = 1 + kTagLength + 1;
  if (id.size() <= prefix || id.size() > prefix + kMaxNodeSessionId) return std::nullopt;
  if (id[0] != 'n' || id[prefix - 1] != '-') return std::nullopt;
  auto tag = id.substr(1, kTagLength);
  if (!std::all_of(tag.begin(), tag.end(), hex_char)) return std::nullopt;
  auto rest = id.substr(prefix);
  if (!std::all_of(rest.begin(), rest.end(), id_char)) return std::nullopt;
  return RoutedSession{std::string(tag), std::string(rest)};
}

}  // namespace sandbox::gateway
