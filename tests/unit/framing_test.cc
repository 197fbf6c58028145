#include <doctest/doctest.h>

#include "common/framing.h"

using namespace sandbox;

TEST_CASE("frames are reassembled across arbitrary splits") {
  std::string stream = frame("hello") + frame("") + frame(std::string(1000, 'z'));
  for (size_t step : {1u, 3u, 7u, 1000u, 5000u}) {
    FrameDecoder d(4096);
    std::vector<std::string> got;
    std::string p;
    for (size_t i = 0; i < stream.size(); i += step) {
      REQUIRE(d.feed(std::string_view(stream).substr(i, step)).ok());
      while (d.next(&p)) got.push_back(p);
    }
    REQUIRE(got.size() == 3);
    CHECK(got[0] == "hello");
    CHECK(got[1].empty());
    CHECK(got[2] == std::string(1000, 'z'));
    CHECK(d.buffered() == 0);
  }
}

TEST_CASE("the header is four bytes, big-endian") {
  auto f = frame("abc");
  CHECK(f == std::string("\0\0\0\3abc", 7));
}

TEST_CASE("an oversize frame poisons the stream") {
  FrameDecoder d(10);
  CHECK(d.feed(frame(std::string(10, 'a'))).ok());
  std::string p;
  CHECK(d.next(&p));
  auto r = d.feed(frame(std::string(11, 'a')));
  CHECK_FALSE(r.ok());
  CHECK(r.error().message.find("exceeds the limit") != std::string::npos);
  CHECK_FALSE(d.next(&p));
  CHECK_FALSE(d.feed(frame("x")).ok());
}

TEST_CASE("an oversize header is caught before its payload arrives") {
  FrameDecoder d(1 << 20);
  CHECK_FALSE(d.feed(std::string("\xff\xff\xff\xff", 4)).ok());
}
