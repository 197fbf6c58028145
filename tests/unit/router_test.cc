// The routing gateway's pure parts: placement (rendezvous hashing with a
// load bound, two random choices), session ids that name their node, and
// the DNS SRV answer parser that discovery trusts with network bytes.
#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <random>
#include <set>

#include "gateway/placement.h"
#include "gateway/srv.h"

using namespace sandbox::gateway;

namespace {

std::vector<NodeLoad> nodes(std::vector<uint32_t> loads) {
  std::vector<NodeLoad> out;
  for (size_t i = 0; i < loads.size(); ++i) out.push_back({node_tag("10.0.0." + std::to_string(i) + ":8000"), loads[i]});
  return out;
}

size_t winner(const std::vector<NodeLoad>& n, const std::string& key) {
  size_t best = 0;
  for (size_t i = 1; i < n.size(); ++i)
    if (rendezvous_score(n[i].tag, key) > rendezvous_score(n[best].tag, key)) best = i;
  return best;
}

}  // namespace

TEST_CASE("router placement: a key stays on its node while the load allows") {
  auto n = nodes({0, 0, 0});
  std::mt19937 rng(1);
  auto random = [&](size_t k) { return static_cast<size_t>(rng() % k); };
  auto key = cache_key("python", {});
  auto order = placement_order(n, key, kDefaultLoadFactor, random);
  REQUIRE(order.size() == 3);
  CHECK(order[0] == winner(n, key));
  CHECK(std::set<size_t>(order.begin(), order.end()).size() == 3);  // every node, once
  for (int i = 0; i < 20; ++i) CHECK(placement_order(n, key, kDefaultLoadFactor, random)[0] == order[0]);

  // Keys spread: over many keys every node wins some.
  std::map<size_t, int> wins;
  for (int i = 0; i < 300; ++i) ++wins[winner(n, cache_key("python", {"pkg" + std::to_string(i)}))];
  CHECK(wins.size() == 3);
  for (auto& [node, count] : wins) CHECK(count > 50);

  // Removing another node does not move the key (the point of rendezvous hashing).
  auto w = winner(n, key);
  std::vector<NodeLoad> fewer;
  for (size_t i = 0; i < n.size(); ++i)
    if (i == w || fewer.size() < 1) fewer.push_back(n[i]);
  CHECK(fewer[winner(fewer, key)].tag == n[w].tag);
}

TEST_CASE("router placement: the load bound sends work to the less loaded of two") {
  auto key = cache_key("python", {});
  auto base = nodes({0, 0, 0});
  size_t w = winner(base, key);
  std::vector<uint32_t> loads(3, 0);
  loads[w] = 4;  // the bound with 4+1 runs over 3 nodes is ceil(1.25*5/3) = 3
  auto n = nodes(loads);
  CHECK(load_bound(n, kDefaultLoadFactor) == 3);
  std::mt19937 rng(7);
  for (int i = 0; i < 50; ++i) {
    auto order = placement_order(n, key, kDefaultLoadFactor, [&](size_t k) { return static_cast<size_t>(rng() % k); });
    CHECK(order[0] != w);         // of any two distinct nodes, one is idle
    CHECK(order.back() == w);     // the loaded one is the last resort
  }
  // Within the bound the key's node is still first.
  loads[w] = 1;
  loads[(w + 1) % 3] = 1;
  CHECK(load_bound(nodes(loads), kDefaultLoadFactor) == 2);
  CHECK(placement_order(nodes(loads), key, kDefaultLoadFactor, [](size_t) { return size_t{0}; })[0] == w);
  // Two choices: the less loaded of the two picked.
  auto two = nodes({5, 9, 1});
  auto pick = [](std::vector<size_t> seq) {
    return [seq, i = size_t{0}](size_t) mutable { return seq[i++ % seq.size()]; };
  };
  CHECK(placement_order(two, "", kDefaultLoadFactor, pick({0, 0}))[0] == 0);  // nodes 0 and 1
  CHECK(placement_order(two, "", kDefaultLoadFactor, pick({1, 1}))[0] == 2);  // nodes 1 and 2
  CHECK(placement_order({}, key, kDefaultLoadFactor, pick({0})).empty());
  CHECK(placement_order(nodes({3}), key, kDefaultLoadFactor, pick({0})) == std::vector<size_t>{0});
}

TEST_CASE("router placement: cache keys ignore the order of packages") {
  CHECK(cache_key("python", {"b", "a"}) == cache_key("python", {"a", "b", "a"}));
  CHECK(cache_key("python", {"a"}) != cache_key("javascript", {"a"}));
  CHECK(cache_key("python", {}) != cache_key("python", {""}));
}

TEST_CASE("router session ids name their node and nothing else") {
  auto tag = node_tag("127.0.0.1:8001");
  CHECK(tag.size() == 8);
  CHECK(tag == node_tag("127.0.0.1:8001"));
  CHECK(tag != node_tag("127.0.0.1:8002"));
  auto id = routed_session_id(tag, "s-0123456789abcdef");
  auto back = parse_routed_session(id);
  REQUIRE(back);
  CHECK(back->tag == tag);
  CHECK(back->node_session == "s-0123456789abcdef");
  CHECK(id.size() <= 80);  // within the router's route pattern
  for (std::string bad : std::vector<std::string>{"", "s-0123", "n0123abcd", "n0123abcd-", "x0123abcd-s-1", "n0123ABCD-s-1", "n0123abc-s-12",
                          "n0123abcdXs-1", "n0123abcd-s/1", "n0123abcd-s.1", "n0123abcd-" + std::string(65, 'a')})
    CHECK_MESSAGE(!parse_routed_session(bad), bad);
  CHECK(parse_routed_session("n0123abcd-" + std::string(64, 'a')));
}

namespace {

std::string u16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)}; }
std::string u32(uint32_t v) { return u16(static_cast<uint16_t>(v >> 16)) + u16(static_cast<uint16_t>(v)); }
std::string name(std::initializer_list<const char*> labels) {
  std::string out;
  for (const char* l : labels) out += static_cast<char>(std::strlen(l)) + std::string(l);
  return out + std::string(1, '\0');
}

// A response to `id` for _sandbox._tcp.test with two SRV records, the
// first target's A record in the additional section, the second's name
// compressed against the question.
std::string srv_response(uint16_t id) {
  auto q = *sandbox::gateway::dns::build_query(id, "_sandbox._tcp.test");
  std::string m = q.substr(0, 12);
  m[2] = '\x81';
  m[3] = '\x80';
  m[6] = 0, m[7] = 2;   // answers
  m[10] = 0, m[11] = 1; // additional
  m += q.substr(12);
  std::string rr1 = u16(1) + u16(5) + u16(8001) + name({"node1", "test"});
  m += "\xc0\x0c" + u16(33) + u16(1) + u32(30) + u16(static_cast<uint16_t>(rr1.size())) + rr1;
  // Target "node2" + pointer to "test" inside the question (offset 12 + 1+8 + 1+4 = 26).
  std::string rr2 = u16(1) + u16(5) + u16(8002) + std::string("\x05node2\xc0\x1a", 8);
  m += "\xc0\x0c" + u16(33) + u16(1) + u32(30) + u16(static_cast<uint16_t>(rr2.size())) + rr2;
  m += name({"NODE1", "test"}) + u16(1) + u16(1) + u32(30) + u16(4) + std::string("\x7f\x00\x00\x01", 4);
  return m;
}

}  // namespace

TEST_CASE("router SRV: queries, answers, and refusals of malformed ones") {
  namespace d = sandbox::gateway::dns;
  auto q = d::build_query(0x1234, "_sandbox._tcp.test.");
  REQUIRE(q);
  CHECK(q->substr(0, 2) == "\x12\x34");
  CHECK(q->substr(12) == name({"_sandbox", "_tcp", "test"}) + u16(33) + u16(1));
  CHECK_FALSE(d::build_query(1, ""));
  CHECK_FALSE(d::build_query(1, "a..b"));
  CHECK_FALSE(d::build_query(1, std::string(64, 'a') + ".test"));

  auto m = srv_response(0x4242);
  auto a = d::parse_answer(m, 0x4242);
  REQUIRE(a);
  CHECK(a->rcode == 0);
  REQUIRE(a->records.size() == 2);
  CHECK(a->records[0].target == "node1.test");
  CHECK(a->records[0].port == 8001);
  CHECK(a->records[1].target == "node2.test");
  CHECK(a->records[1].port == 8002);
  CHECK(a->addresses["node1.test"] == std::vector<std::string>{"127.0.0.1"});  // names compare in lower case
  CHECK_FALSE(d::parse_answer(m, 0x4243));  // not the answer to our query

  // Every truncation is refused, never read past.
  for (size_t n = 0; n < m.size(); ++n) CHECK_FALSE(d::parse_answer(m.substr(0, n), 0x4242));
  // A query is not an answer.
  CHECK_FALSE(d::parse_answer(*q, 0x1234));
  // A compression pointer to itself, or forwards, is malformed.
  auto loop = m;
  loop.replace(12, 2, "\xc0\x0c");
  CHECK_FALSE(d::parse_answer(loop, 0x4242));
  // A target that is no host name is dropped, the rest kept.
  auto odd = m;
  auto at = odd.find("node2");
  odd[at] = '/';
  auto b = d::parse_answer(odd, 0x4242);
  REQUIRE(b);
  CHECK(b->records.size() == 1);
  // Random bytes: no crash, whatever the verdict.
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    auto fuzzed = m;
    for (int k = 0; k < 4; ++k) fuzzed[rng() % fuzzed.size()] = static_cast<char>(rng());
    (void)d::parse_answer(fuzzed, 0x4242);
  }
}
