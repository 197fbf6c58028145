// The gateway's own parts without HTTP: the token file, per-token quotas,
// and the expiring download store.
#include <doctest/doctest.h>

#include <thread>

#include "gateway/file_store.h"
#include "gateway/tokens.h"

using namespace sandbox;
using namespace sandbox::gateway;

TEST_CASE("gateway tokens: the file's lines, comments and refusals") {
  auto t = Tokens::parse("# operators\nabcdefghijklmnop0 alice 2\r\n\n  qrstuvwxyz0123456 bob # comment\n", "f");
  REQUIRE(t.ok());
  CHECK(t->size() == 2);
  auto a = t->check("Bearer abcdefghijklmnop0");
  REQUIRE(a);
  CHECK(a->name == "alice");
  CHECK(a->max_concurrent == 2);
  CHECK(t->check("Bearer qrstuvwxyz0123456")->max_concurrent == kDefaultConcurrent);
  CHECK_FALSE(t->check("Bearer abcdefghijklmnop"));    // a prefix is not the token
  CHECK_FALSE(t->check("Bearer abcdefghijklmnop00"));  // nor is a longer one
  CHECK_FALSE(t->check("Basic abcdefghijklmnop0"));
  CHECK_FALSE(t->check("Bearer "));
  CHECK_FALSE(t->check(""));
  for (const char* bad : {"short alice\n", "abcdefghijklmnop0\n", "abcdefghijklmnop0 a 0\n", "abcdefghijklmnop0 a x\n",
                          "abcdefghijklmnop0 a 1 extra\n", "abcdefghijklmnop0 a\nabcdefghijklmnop0 b\n"}) {
    auto r = Tokens::parse(bad, "tokens");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message.rfind("tokens:", 0) == 0);  // names the file and line
  }
  CHECK_FALSE(Tokens::parse(std::string(2000, 'x') + " a\n", "f").ok());
  CHECK_FALSE(Tokens::load("/nonexistent/tokens").ok());
}

TEST_CASE("gateway quotas: requests in flight per token, given back when done") {
  Quotas q;
  Token tok{"alice", 2};
  auto a = q.take(tok);
  auto b = q.take(tok);
  REQUIRE(a);
  REQUIRE(b);
  CHECK_FALSE(q.take(tok));
  CHECK(q.take(Token{"bob", 1}));  // another token's quota is its own
  a.reset();
  CHECK(q.take(tok));
}

TEST_CASE("gateway file store: random tokens, a byte bound, expiry") {
  FileStore s(10, std::chrono::seconds(1));
  auto t1 = s.put("a.txt", "12345");
  auto t2 = s.put("b.txt", "67890");
  REQUIRE(t1);
  REQUIRE(t2);
  CHECK(t1->size() == 32);
  CHECK(*t1 != *t2);
  CHECK_FALSE(s.put("c", "x"));  // past the bound
  CHECK(s.bytes() == 10);
  auto f = s.get(*t1);
  REQUIRE(f);
  CHECK(f->name == "a.txt");
  CHECK(f->data == "12345");
  CHECK_FALSE(s.get("0123456789abcdef0123456789abcdef"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CHECK_FALSE(s.get(*t1));  // expired, and its bytes given back
  CHECK(s.bytes() == 0);
  CHECK(s.put("c", "x"));
}
