#include <doctest/doctest.h>

#include "common/framing.h"

using namespace sandbox;

namespace {

// Every complete payload the decoder yields, or "!" for an error.
std::vector<std::string> drain(FrameDecoder& d) {
  std::vector<std::string> out;
  while (auto p = d.next()) out.push_back(*p ? **p : "!");
  return out;
}

}  // namespace

TEST_CASE("frames are reassembled across arbitrary splits") {
  std::string stream = frame("hello") + frame("") + frame(std::string(1000, 'z'));
  for (size_t step : {1u, 3u, 7u, 1000u, 5000u}) {
    FrameDecoder d(4096);
    std::vector<std::string> got;
    for (size_t i = 0; i < stream.size(); i += step) {
      d.feed(std::string_view(stream).substr(i, step));
      for (auto& p : drain(d)) got.push_back(p);
    }
    REQUIRE(got.size() == 3);
    CHECK(got[0] == "hello");
    CHECK(got[1].empty());
    CHECK(got[2] == std::string(1000, 'z'));
    CHECK(d.buffered() == 0);
    CHECK_FALSE(d.mid_frame());
  }
}

TEST_CASE("the header is four bytes, big-endian") {
  auto f = frame("abc");
  CHECK(f == std::string("\0\0\0\3abc", 7));
}

TEST_CASE("an oversize frame fails the stream, at once and for good") {
  FrameDecoder d(10);
  d.feed(frame(std::string(10, 'a')) + frame(std::string(11, 'a')) + frame("x"));
  auto first = d.next();
  REQUIRE(first);
  CHECK(**first == std::string(10, 'a'));
  auto second = d.next();
  REQUIRE(second);
  REQUIRE_FALSE(*second);
  CHECK(second->error().message.find("exceeds the limit") != std::string::npos);
  // Not "no frame yet": the stream is dead, and says so every time.
  auto third = d.next();
  REQUIRE(third);
  CHECK_FALSE(*third);
}

TEST_CASE("an oversize header is caught before its payload arrives") {
  FrameDecoder d(1 << 20);
  d.feed(std::string("\xff\xff\xff\xff", 4));
  auto r = d.next();
  REQUIRE(r);
  CHECK_FALSE(*r);
}

TEST_CASE("in skip mode an oversize frame is dropped and the stream goes on") {
  FrameDecoder d(10, FrameDecoder::Oversize::skip);
  std::string stream = frame("one") + frame(std::string(50, 'x')) + frame("two");
  std::vector<std::string> got;
  for (size_t i = 0; i < stream.size(); i += 7) {
    d.feed(std::string_view(stream).substr(i, 7));
    for (auto& p : drain(d)) got.push_back(p);
  }
  CHECK(got == std::vector<std::string>{"one", "!", "two"});
}

TEST_CASE("a message reader decodes frames and reports a bad one without losing step") {
  MessageReader r(1 << 20);
  r.feed(frame("garbage") + frame_message(proto::Ping{7}));
  auto bad = r.next();
  REQUIRE(bad);
  CHECK_FALSE(*bad);
  auto good = r.next();
  REQUIRE(good);
  REQUIRE(*good);
  CHECK(std::get<proto::Ping>(**good).seq == 7);
  CHECK_FALSE(r.next());
}
