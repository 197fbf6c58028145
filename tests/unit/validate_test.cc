#include <doctest/doctest.h>

#include <sandbox/limits.h>

#include "common/validate.h"

using namespace sandbox;
using ms = std::chrono::milliseconds;

namespace {

RunRequest good() { return RunRequest{Language::python, "print(1)", {}, ms(30'000), 256}; }

}  // namespace

TEST_CASE("a plain request is valid") { CHECK(validate(good()).ok()); }

TEST_CASE("code, timeout and memory bounds") {
  auto r = good();
  r.code = "";
  CHECK(validate(r).error().message == "code is empty");
  r = good();
  r.code.assign(limits::kMaxCodeBytes + 1, 'x');
  CHECK_FALSE(validate(r).ok());
  r.code.assign(limits::kMaxCodeBytes, 'x');
  CHECK(validate(r).ok());
  r = good();
  r.timeout = ms(limits::kMaxTimeoutMs + 1);
  CHECK_FALSE(validate(r).ok());
  r.timeout = ms(500);  // sub-second is allowed
  CHECK(validate(r).ok());
  r.timeout = ms(0);
  CHECK_FALSE(validate(r).ok());
  r = good();
  r.memory_mb = 127;
  CHECK_FALSE(validate(r).ok());
  r.memory_mb = 2049;
  CHECK_FALSE(validate(r).ok());
  r.memory_mb = 2048;
  CHECK(validate(r).ok());
}

TEST_CASE("code that is only white space, or holds a NUL, is refused for every language") {
  for (auto lang : {Language::python, Language::javascript, Language::raw}) {
    auto r = good();
    r.language = lang;
    r.code = " \n\t\r\f\v ";
    CHECK(validate(r).error().message == "code is only white space");
    r.code = std::string("echo a\0echo b", 13);
    CHECK(validate(r).error().message == "code contains a NUL byte");
    r.code = " x ";
    CHECK(validate(r).ok());
  }
  CHECK(validate_exec("", ms(0)).error().code == ErrorCode::invalid_argument);
  CHECK(validate_exec("   ", ms(0)).error().message == "code is only white space");
  CHECK(validate_exec("x", ms(0)).ok());  // 0: the session's default
  CHECK_FALSE(validate_exec("x", ms(50)).ok());
}

TEST_CASE("environment names are refused by class, in any case") {
  // Each class, with members the old list of names missed.
  const char* refused[] = {
      // the loader and the C library
      "LD_PRELOAD", "ld_preload", "Ld_Library_Path", "LD_AUDIT", "LD_DEBUG_OUTPUT", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX",
      "GCONV_PATH", "LOCPATH", "NLSPATH",
      // each interpreter's start-up and module paths
      "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONINSPECT", "PYTHONWARNINGS", "NODE_OPTIONS", "NODE_PATH",
      "NODE_REPL_EXTERNAL_MODULE", "PERL5LIB", "PERL5OPT", "RUBYOPT",
      // shell hooks
      "BASH_ENV", "ENV", "BASHOPTS", "SHELLOPTS", "PROMPT_COMMAND", "PS4", "IFS", "CDPATH", "GLOBIGNORE",
      // what the sandbox sets itself
      "PATH", "HOME"};
  for (const char* name : refused) {
    auto r = validate_env_name(name);
    CHECK_MESSAGE(!r.ok(), name);
    if (!r.ok()) CHECK(r.error().code == ErrorCode::invalid_argument);
  }
  for (const char* name : {"MY_VAR_1", "_x", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "NODE_ENV", "LANG", "TZ", "PATHS"})
    CHECK_MESSAGE(validate_env_name(name).ok(), name);
  CHECK(validate_env_name("LD_AUDIT").error().message.find("dynamic loader") != std::string::npos);
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
  CHECK_FALSE(validate(r).ok());
  r = good();
  r.env = {{"A", "1"}, {"A", "2"}};
  CHECK(validate(r).error().message.find("given twice") != std::string::npos);
}

TEST_CASE("session options are checked like a run, and the idle timeout is bounded") {
  SessionOptions o;
  CHECK(validate(o).ok());
  o.idle_timeout = ms(limits::kMinSessionIdleMs - 1);
  CHECK(validate(o).error().message.find("idle timeout") != std::string::npos);
  o.idle_timeout = ms(limits::kMaxSessionIdleMs);
  CHECK(validate(o).ok());
  o.env = {{"LD_PRELOAD", "/x.so"}};
  CHECK_FALSE(validate(o).ok());
  o.env.clear();
  o.memory_mb = 64;
  CHECK_FALSE(validate(o).ok());
}
