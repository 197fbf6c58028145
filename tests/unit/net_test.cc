// The network policy's pieces without a VM: allowlist syntax and matching,
// special-purpose ranges, the channel's frames, and the parsers of guest
// bytes (DNS, TLS ClientHello, HTTP head) on real and hostile inputs.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include <sandbox/limits.h>

#include "common/net_frame.h"
#include "common/net_rules.h"
#include "daemon/dns_message.h"
#include "daemon/http_head.h"
#include "daemon/net_ranges.h"
#include "daemon/tls_hello.h"

using namespace sandbox;
using namespace sandbox::daemon;

namespace {

std::string seed(const std::string& target, const std::string& name) {
  std::ifstream f(std::string(SANDBOXD_SOURCE_DIR) + "/fuzz/corpus/" + target + "/" + name, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string addr(const char* text) { return *parse_address(text); }

}  // namespace

TEST_CASE("allowlist entries: names, wildcards and ports parse; addresses, empty labels and junk do not") {
  auto r = parse_domain_rule("Example.ORG.");
  REQUIRE(r.ok());
  CHECK(r->name == "example.org");
  CHECK(!r->wildcard);
  CHECK(r->port == 0);
  r = parse_domain_rule("*.example.com");
  REQUIRE(r.ok());
  CHECK(r->wildcard);
  CHECK(r->name == "example.com");
  r = parse_domain_rule("api.example.org:8443");
  REQUIRE(r.ok());
  CHECK(r->port == 8443);
  for (const char* bad : {"", "1.2.3.4", "1.2.3.4:443", "[::1]", "::1", "2001:db8::1", "a..b", ".example.org",
                          "exa mple.org", "example.org:0", "example.org:70000", "example.org:x", "*.com", "*",
                          "ex\nample.org", "127.1", "0x7f.1", "example.123"}) {
    auto b = parse_domain_rule(bad);
    CHECK_MESSAGE(!b.ok(), bad);
    if (!b.ok()) CHECK(b.error().code == ErrorCode::invalid_argument);
  }
  CHECK(!parse_domain_rule(std::string(64, 'a') + ".org").ok());
  std::vector<std::string> many(limits::kMaxAllowedDomains + 1, "example.org");
  CHECK(!parse_domain_rules(many).ok());
}

TEST_CASE("allowlist matching: a wildcard admits subdomains, not the suffix; ports default to 443 and 80") {
  auto rules = *parse_domain_rules({"*.example.com", "api.example.org:8443", "example.net"});
  CHECK(rules_admit(rules, "a.example.com", 443));
  CHECK(rules_admit(rules, "b.a.example.com", 80));
  CHECK(!rules_admit(rules, "example.com", 443));  // the parent of allowed subdomains
  CHECK(!rules_admit(rules, "badexample.com", 443));
  CHECK(!rules_admit(rules, "a.example.com", 8443));
  CHECK(rules_admit(rules, "api.example.org", 8443));
  CHECK(!rules_admit(rules, "api.example.org", 443));
  CHECK(!rules_admit(rules, "www.example.net", 443));  // a sibling
  CHECK(rules_admit(rules, "example.net", 80));
  CHECK(rule_ports(rules) == std::vector<uint16_t>{80, 443, 8443});
}

TEST_CASE("port mappings: guest 1-65535, host 0 or 1024-65535, no duplicates, at most 10") {
  NetworkRequest n;
  n.expose_ports = {{8080, 0}, {3000, 18080}};
  CHECK(validate_network(n).ok());
  n.expose_ports = {{0, 0}};
  CHECK(!validate_network(n).ok());
  n.expose_ports = {{80, 80}};
  CHECK(!validate_network(n).ok());
  n.expose_ports = {{80, 2000}, {80, 2001}};
  CHECK(!validate_network(n).ok());
  n.expose_ports = {{80, 2000}, {81, 2000}};
  CHECK(!validate_network(n).ok());
  n.expose_ports.clear();
  for (uint32_t p = 1; p <= limits::kMaxExposedPorts + 1; ++p) n.expose_ports.push_back({p, 0});
  CHECK(!validate_network(n).ok());
}

TEST_CASE("special-purpose ranges are refused unless the operator allows them") {
  for (const char* a : {"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
                        "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd12::1",
                        "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a00:1::", "ff02::1"})
    CHECK_MESSAGE(address_refused(addr(a), {}), a);
  for (const char* a : {"93.184.216.34", "1.1.1.1", "2606:2800:220:1:248:1893:25c8:1946"})
    CHECK_MESSAGE(!address_refused(addr(a), {}), a);
  auto loopback = *parse_cidr("127.0.0.0/8");
  CHECK(!address_refused(addr("127.0.0.5"), {loopback}));
  CHECK(address_refused(addr("10.0.0.1"), {loopback}));
  CHECK(address_refused(addr("::ffff:127.0.0.1"), {loopback}));  // the mapped form is not the range
  CHECK(!parse_cidr("127.0.0.0/33"));
  CHECK(!parse_cidr("example.org/8"));
}

TEST_CASE("network frames: round trip, bounded, unknown types refused") {
  net::FrameReader r;
  std::string stream = net::encode_frame(net::FrameType::data, 7, "hello") + net::encode_frame(net::FrameType::close, 7);
  r.feed(stream.substr(0, 5));
  CHECK(!r.next());
  r.feed(stream.substr(5));
  auto f = r.next();
  REQUIRE(f);
  REQUIRE(f->ok());
  CHECK((*f)->type == net::FrameType::data);
  CHECK((*f)->stream == 7);
  CHECK((*f)->payload == "hello");
  f = r.next();
  REQUIRE(f);
  CHECK((*f)->type == net::FrameType::close);
  CHECK(!r.next());
  net::FrameReader bad;
  bad.feed(std::string("\x63\0\0\0\0\0\0\1\0\0\0\0", 12));
  f = bad.next();
  REQUIRE(f);
  CHECK(!f->ok());
  net::FrameReader big;
  big.feed(std::string("\x05\0\0\0\0\0\0\1\x7f\0\0\0", 12));
  f = big.next();
  REQUIRE(f);
  CHECK(!f->ok());
  auto open = net::decode_open(net::encode_open({4, addr("93.184.216.34"), 443}));
  REQUIRE(open);
  CHECK(open->port == 443);
  CHECK(open->address == addr("93.184.216.34"));
  CHECK(!net::decode_open("short"));
  auto p = net::decode_policy(net::encode_policy({true, {80, 443}}));
  REQUIRE(p);
  CHECK(p->egress);
  CHECK(p->ports == std::vector<uint16_t>{80, 443});
  CHECK(!net::decode_policy(std::string("\x01\xff\xff", 3)));
}

TEST_CASE("DNS: a guest query parses, its answer carries the addresses, hostile messages are refused") {
  auto q = dns::parse_query(seed("fuzz_dns_message", "query_a"));
  REQUIRE(q);
  CHECK(q->name == "example.org");
  CHECK(q->qtype == dns::kTypeA);
  auto answer = dns::build_answer(*q, dns::kNoError, {addr("127.0.0.5"), addr("::1")});
  auto back = dns::parse_response(answer, q->id, dns::kTypeA);
  REQUIRE(back);
  CHECK(*back == std::vector<std::string>{addr("127.0.0.5")});  // only the A record
  auto nx = dns::parse_response(dns::build_answer(*q, dns::kNxDomain), q->id, dns::kTypeA);
  REQUIRE(nx);
  CHECK(nx->empty());
  CHECK(!dns::parse_response(answer, static_cast<uint16_t>(q->id + 1), dns::kTypeA));  // another query's
  auto cname = dns::parse_response(seed("fuzz_dns_message", "response_cname"), 0x1234, dns::kTypeA);
  REQUIRE(cname);
  CHECK(*cname == std::vector<std::string>{addr("93.184.216.34")});
  // A pointer to itself ends in the bound, not a loop.
  CHECK(!dns::parse_response(seed("fuzz_dns_message", "pointer_loop"), 0x1234, dns::kTypeA));
  CHECK(!dns::parse_query(""));
  CHECK(!dns::parse_query(std::string(12, '\0')));  // no question
  CHECK(!dns::parse_query(seed("fuzz_dns_message", "response_cname")));  // a response, not a query
}

TEST_CASE("TLS ClientHello: the SNI of a real hello; none, garbage and partial hellos") {
  auto h = tls::parse_client_hello(seed("fuzz_tls_hello", "hello_sni"));
  CHECK(h.verdict == tls::Verdict::sni);
  CHECK(h.server_name == "example.org");
  CHECK(tls::parse_client_hello(seed("fuzz_tls_hello", "hello_no_sni")).verdict == tls::Verdict::no_sni);
  CHECK(tls::parse_client_hello(seed("fuzz_tls_hello", "not_tls")).verdict == tls::Verdict::not_tls);
  auto whole = seed("fuzz_tls_hello", "hello_other");
  CHECK(tls::parse_client_hello(whole.substr(0, 40)).verdict == tls::Verdict::need_more);
  CHECK(tls::parse_client_hello(whole).server_name == "api.test.example");
  CHECK(tls::parse_client_hello(std::string("\x16\x03\x01\xff\xff", 5)).verdict == tls::Verdict::not_tls);
}

TEST_CASE("HTTP head: Host, absolute form, CONNECT; two Hosts or none are not admitted") {
  auto h = http::parse_request_head(seed("fuzz_http_head", "get_host"));
  CHECK(h.verdict == http::Verdict::host);
  CHECK(h.host == "example.org");
  CHECK(http::parse_request_head("GET / HTTP/1.1\r\nHost: a.org:8080\r\n\r\n").port == 8080);
  CHECK(http::parse_request_head(seed("fuzz_http_head", "two_hosts")).verdict == http::Verdict::not_http);
  CHECK(http::parse_request_head("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").verdict == http::Verdict::no_host);
  CHECK(http::parse_request_head("GET http://b.org/ HTTP/1.1\r\nHost: a.org\r\n\r\n").verdict ==
        http::Verdict::not_http);
  auto c = http::parse_request_head(seed("fuzz_http_head", "connect"));
  CHECK(c.verdict == http::Verdict::host);
  CHECK(c.method == "CONNECT");
  CHECK(c.port == 443);
  CHECK(http::parse_request_head("GET / HTT").verdict == http::Verdict::need_more);
  CHECK(http::parse_request_head("\x16\x03\x01").verdict == http::Verdict::not_http);
  CHECK(http::parse_request_head(std::string(http::kMaxHeadBytes, 'A')).verdict == http::Verdict::not_http);
}
