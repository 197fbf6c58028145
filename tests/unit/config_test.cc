#include <doctest/doctest.h>

#include "daemon/config.h"

using namespace sandbox;
using namespace sandbox::daemon;

TEST_CASE("defaults are documented and sane") {
  Config c;
  CHECK(c.socket == "/run/sandboxd/sandboxd.sock");
  CHECK(c.accel == Accel::automatic);
  CHECK(c.boot_retries == 1);
  CHECK(config_keys().size() >= 10);
}

TEST_CASE("a config file sets keys, ignores comments and blank lines") {
  Config c;
  auto r = config_parse(c,
                        "# comment\n"
                        "\n"
                        "socket = /tmp/x.sock\n"
                        "  accel=tcg  \n"
                        "allowed_uids = 1000, 1001\n"
                        "allowed_gids = 50\n"
                        "boot_timeout_ms = 9000\n",
                        "test.conf");
  REQUIRE_MESSAGE(r.ok(), r.error().message);
  CHECK(c.socket == "/tmp/x.sock");
  CHECK(c.accel == Accel::tcg);
  CHECK(c.allowed_uids == std::vector<uid_t>{1000, 1001});
  CHECK(c.allowed_gids == std::vector<gid_t>{50});
  CHECK(c.boot_timeout_ms == 9000);
}

TEST_CASE("errors name the file, line and key") {
  Config c;
  auto r = config_parse(c, "socket = /a\nfrobnicate = 1\n", "/etc/sandboxd/sandboxd.conf");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "/etc/sandboxd/sandboxd.conf:2: unknown key 'frobnicate'");
  r = config_parse(c, "vcpus = many\n", "f");
  CHECK(r.error().message == "f:1: vcpus: 'many' is not a number");
  r = config_parse(c, "vcpus = 0\n", "f");
  CHECK(r.error().message == "f:1: vcpus: 0 is outside 1-64");
  r = config_parse(c, "accel = fast\n", "f");
  CHECK(r.error().message.find("not one of auto, kvm, tcg") != std::string::npos);
  r = config_parse(c, "no equals sign\n", "f");
  CHECK(r.error().message == "f:1: expected 'key = value'");
}

TEST_CASE("SANDBOXD_ variables override the file") {
  Config c;
  REQUIRE(config_parse(c, "vcpus = 2\n", "f").ok());
  std::string a = "SANDBOXD_VCPUS=4", b = "PATH=/bin", d = "SANDBOXD_SOCKET=/tmp/y.sock";
  char* env[] = {a.data(), b.data(), d.data(), nullptr};
  REQUIRE(config_apply_env(c, env).ok());
  CHECK(c.vcpus == 4);
  CHECK(c.socket == "/tmp/y.sock");
  std::string bad = "SANDBOXD_NOPE=1";
  char* env2[] = {bad.data(), nullptr};
  auto r = config_apply_env(c, env2);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "SANDBOXD_NOPE: unknown key 'nope'");
}
