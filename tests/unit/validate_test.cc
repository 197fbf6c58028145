#include <doctest/doctest.h>

#include "common/limits.h"
#include "common/validate.h"

using namespace sandbox;

namespace {

proto::RunRequest good() { return proto::RunRequest{1, proto::Language::python, "print(1)", {}, 30'000, 256}; }

}  // namespace

TEST_CASE("a plain request is valid") { CHECK(validate_run_request(good()).ok()); }

TEST_CASE("code, timeout and memory bounds") {
  auto r = good();
  r.code = "";
  CHECK(validate_run_request(r).error().message == "code is empty");
  r = good();
  r.code.assign(limits::kMaxCodeBytes + 1, 'x');
  CHECK_FALSE(validate_run_request(r).ok());
  r.code.assign(limits::kMaxCodeBytes, 'x');
  CHECK(validate_run_request(r).ok());
  r = good();
  r.timeout_ms = limits::kMaxTimeoutMs + 1;
  CHECK_FALSE(validate_run_request(r).ok());
  r.timeout_ms = 500;  // sub-second is allowed
  CHECK(validate_run_request(r).ok());
  r.timeout_ms = 0;
  CHECK_FALSE(validate_run_request(r).ok());
  r = good();
  r.memory_mb = 127;
  CHECK_FALSE(validate_run_request(r).ok());
  r.memory_mb = 2049;
  CHECK_FALSE(validate_run_request(r).ok());
  r.memory_mb = 2048;
  CHECK(validate_run_request(r).ok());
}

TEST_CASE("dangerous environment names are refused in any case") {
  for (const char* name : {"LD_PRELOAD", "ld_preload", "Ld_Library_Path", "PYTHONSTARTUP", "PYTHONPATH",
                           "NODE_OPTIONS", "BASH_ENV", "ENV", "GLIBC_TUNABLES"}) {
    auto r = validate_env_name(name);
    CHECK_MESSAGE(!r.ok(), name);
    if (!r.ok()) CHECK(r.error().code == ErrorCode::invalid_argument);
  }
  CHECK(validate_env_name("MY_VAR_1").ok());
  CHECK(validate_env_name("_x").ok());
}

TEST_CASE("malformed environment names and values are refused") {
  CHECK_FALSE(validate_env_name("").ok());
  CHECK_FALSE(validate_env_name("1ABC").ok());
  CHECK_FALSE(validate_env_name("A=B").ok());
  CHECK_FALSE(validate_env_name(std::string("A\0B", 3)).ok());
  CHECK_FALSE(validate_env_name(std::string(limits::kMaxEnvNameBytes + 1, 'A')).ok());
  CHECK(validate_env_name(std::string(limits::kMaxEnvNameBytes, 'A')).ok());
  CHECK_FALSE(validate_env_value("A", "line\nbreak").ok());
  CHECK_FALSE(validate_env_value("A", std::string("nul\0", 4)).ok());
  CHECK_FALSE(validate_env_value("A", "\x1b[31m").ok());
  CHECK(validate_env_value("A", "tab\tand unicode \xc3\xa9").ok());
  CHECK_FALSE(validate_env_value("A", std::string(limits::kMaxEnvValueBytes + 1, 'v')).ok());

  auto r = good();
  for (size_t i = 0; i <= limits::kMaxEnvVars; ++i) r.env.emplace_back("V" + std::to_string(i), "x");
  CHECK_FALSE(validate_run_request(r).ok());
  r = good();
  r.env = {{"A", "1"}, {"A", "2"}};
  CHECK(validate_run_request(r).error().message.find("given twice") != std::string::npos);
}
