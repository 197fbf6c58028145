#include <doctest/doctest.h>

#include <sandbox/json.h>

using namespace sandbox;

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

TEST_CASE("a result's JSON comes from its field table, with exact bytes when they are not text") {
  RunResult r;
  r.language = Language::javascript;
  r.stdout_data = "hi\n";
  r.stderr_data = std::string("\xff\x00", 2);
  r.exit_code = 3;
  r.timing.startup_ms = 12;
  r.accelerator = "tcg";
  auto j = to_json(r);
  CHECK(j.starts_with("{\"language\":\"javascript\",\"stdout\":\"hi\\n\""));
  CHECK(j.find("\"stderr_base64\":\"/wA=\"") != std::string::npos);
  CHECK(j.find("\"stdout_base64\"") == std::string::npos);
  CHECK(j.find("\"exit_code\":3") != std::string::npos);
  CHECK(j.find("\"timing\":{\"setup_ms\":0,\"boot_ms\":0,\"startup_ms\":12,") != std::string::npos);
  CHECK(j.find("\"accelerator\":\"tcg\"") != std::string::npos);
  CHECK(j.find("\"state_lost\":false,") != std::string::npos);
  CHECK(j.ends_with("\"exposed_ports\":[],\"network\":{\"connections\":0,\"bytes_in\":0,\"bytes_out\":0,\"denied\":[]},"
                    "\"layer\":{\"key\":\"\",\"cache\":\"\",\"build_ms\":0}}"));
}

TEST_CASE("status, sessions, listings and errors print their fields") {
  DaemonStatus s;
  s.pool = {{Language::raw, 2, 1, 0, 5, 6}};
  auto j = to_json(s);
  CHECK(j.find("\"pool\":[{\"language\":\"raw\",\"size\":2,\"ready\":1,\"booting\":0,\"hits\":5,\"misses\":6,\"layer\":\"\"}]") !=
        std::string::npos);
  SessionInfo si;
  si.id = "s-1";
  si.idle_timeout = std::chrono::milliseconds(60'000);
  CHECK(to_json(si).starts_with("{\"session\":\"s-1\",\"language\":\"python\",\"memory_mb\":0,\"idle_timeout_ms\":60000,"));
  FileListing l{{{"a b", false, 3}}, true};
  CHECK(to_json(l) == "{\"entries\":[{\"name\":\"a b\",\"is_dir\":false,\"size\":3}],\"truncated\":true}");
  CHECK(to_json(Error::make(ErrorCode::capacity, "busy")) == "{\"code\":\"capacity\",\"message\":\"busy\",\"retryable\":true}");
}
