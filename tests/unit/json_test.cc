#include <doctest/doctest.h>

#include "ctl/json.h"

using namespace sandbox::ctl;

TEST_CASE("json strings escape what JSON requires") {
  CHECK(json_string("plain") == "\"plain\"");
  CHECK(json_string("a\"b\\c\nd\te") == "\"a\\\"b\\\\c\\nd\\te\"");
  CHECK(json_string(std::string("\0\x01\x7f", 3)) == "\"\\u0000\\u0001\\u007f\"");
  CHECK(json_string("\xc3\xa9\xf0\x9f\x98\x80") == "\"\xc3\xa9\xf0\x9f\x98\x80\"");
}

TEST_CASE("invalid UTF-8 is replaced and detected") {
  CHECK(json_string("a\xff" "b") == "\"a\\ufffdb\"");
  CHECK_FALSE(is_valid_utf8("\xc0\x80"));          // overlong
  CHECK_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
  CHECK_FALSE(is_valid_utf8("\xe2\x82"));          // truncated
  CHECK(is_valid_utf8("h\xc3\xa9llo"));
}

TEST_CASE("base64 matches RFC 4648 vectors") {
  CHECK(base64("") == "");
  CHECK(base64("f") == "Zg==");
  CHECK(base64("fo") == "Zm8=");
  CHECK(base64("foo") == "Zm9v");
  CHECK(base64("foobar") == "Zm9vYmFy");
  CHECK(base64(std::string("\xff\x00", 2)) == "/wA=");
}
