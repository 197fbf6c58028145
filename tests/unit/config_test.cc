#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "daemon/builder.h"
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

TEST_CASE("service keys: users, groups, cgroup paths and limits are checked and named") {
  Config c;
  CHECK(c.qemu_user == "qemu-vm");
  CHECK(c.socket_group == "sandbox");
  CHECK_FALSE(c.require_cgroup_limits);
  REQUIRE(config_parse(c,
                       "qemu_user = vmuser\nsocket_group = devs\nrequire_cgroup_limits = on\n"
                       "cgroup_root = /sys/fs/cgroup\ncgroup_base = /sandboxd.slice/sandboxd.service\n"
                       "vm_memory_overhead_mb = 256\nvm_pids_max = 200\nvm_cpu_percent = 150\n",
                       "f")
              .ok());
  CHECK(c.qemu_user == "vmuser");
  CHECK(c.socket_group == "devs");
  CHECK(c.require_cgroup_limits);
  CHECK(c.cgroup_base == "/sandboxd.slice/sandboxd.service");
  CHECK(c.vm_cpu_percent == 150);
  auto bad = [](const char* text) {
    Config x;
    auto r = config_parse(x, text, "f");
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(bad("qemu_user = ../root\n") == "f:1: qemu_user: '../root' is not a user or group name");
  CHECK(bad("socket_group = -x\n") == "f:1: socket_group: '-x' is not a user or group name");
  CHECK(bad("require_cgroup_limits = yes\n") == "f:1: require_cgroup_limits: 'yes' is not on or off");
  CHECK(bad("cgroup_root = relative\n") == "f:1: cgroup_root: 'relative' is not an absolute path");
  CHECK(bad("cgroup_base = /a/../b\n") == "f:1: cgroup_base: '/a/../b' is not an absolute path");
  CHECK(bad("vm_pids_max = 3\n") == "f:1: vm_pids_max: 3 is outside 16-65536");
}

TEST_CASE("the shipped sample configuration lists every key with its default, and parses") {
  std::ifstream in(std::string(SANDBOXD_SOURCE_DIR) + "/etc/sandboxd.conf");
  std::stringstream shipped;
  shipped << in.rdbuf();
  auto sample = config_sample();
  CHECK_MESSAGE(shipped.str() == sample, "etc/sandboxd.conf is stale: regenerate it with sandboxd --print-config");
  for (const auto& [key, help] : config_keys()) CHECK_MESSAGE(sample.find("\n#" + key + " = ") != std::string::npos, key);
  // Uncommented, the sample sets every key to its default.
  std::string uncommented;
  std::istringstream lines(sample);
  std::string line;
  while (std::getline(lines, line))
    uncommented += (line.starts_with("#") && line.find(" = ") != std::string::npos && line[1] != ' ' ? line.substr(1) : line) + "\n";
  Config c;
  auto r = config_parse(c, uncommented, "sample");
  CHECK_MESSAGE(r.ok(), r.error().message);
  CHECK(c.qemu_user == Config{}.qemu_user);
  CHECK(c.boot_timeout_ms == Config{}.boot_timeout_ms);
}

TEST_CASE("package keys: pool_layers sets are pinned, canonical, few and distinct; index URLs name a host") {
  Config c;
  REQUIRE(config_parse(c,
                       "pool_layers = python:2:Pandas==2.1.4 numpy==1.26.4; javascript:1:left-pad@1.3.0\n"
                       "python_index_url = https://pypi.example:8443/simple\n",
                       "f")
              .ok());
  REQUIRE(c.pool_layers.size() == 2);
  auto set = parse_pool_layer(c.pool_layers[0]);
  REQUIRE(set.ok());
  CHECK(set->language == Language::python);
  CHECK(set->count == 2);
  // Canonical and sorted, as a request's packages are keyed.
  CHECK(set->packages == std::vector<std::string>{"numpy==1.26.4", "pandas==2.1.4"});
  CHECK(index_host_entry(c.python_index_url).value() == "pypi.example:8443");

  auto bad = [](const std::string& text) {
    Config x;
    auto r = config_parse(x, text, "f");
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(bad("pool_layers = python:1:numpy>=1.26\n").find("not pinned") != std::string::npos);
  CHECK(bad("pool_layers = raw:1:x==1\n").find("only Debian packages") != std::string::npos);
  CHECK(bad("pool_layers = ruby:1:x==1\n").find("python, javascript or raw") != std::string::npos);
  CHECK(bad("pool_layers = python:0:x==1\n").find("from 1 to 16") != std::string::npos);
  CHECK(bad("pool_layers = python:2\n").find("not LANGUAGE:COUNT:PACKAGES") != std::string::npos);
  CHECK(bad("pool_layers = python:1:a==1; python:3:A==1\n").find("listed twice") != std::string::npos);
  CHECK(bad("pool_layers = python:1:a==1;python:1:b==1;python:1:c==1;python:1:d==1;python:1:e==1;python:1:f==1\n")
            .find("at most 5") != std::string::npos);
  CHECK(bad("pool_layers = python:1:x==1 --index-url=http://evil/\n").find("options") != std::string::npos);
  CHECK(bad("python_index_url = https://user@pypi.example/simple\n").find("python_index_url") != std::string::npos);
}

TEST_CASE("apt keys: archives are URL, suite and components; pool_layers takes Debian packages") {
  Config c;
  REQUIRE(config_parse(c,
                       "apt_sources = https://deb.example:8443/debian stable main contrib; http://local.test/flat ./\n"
                       "apt_keyring_file = /etc/sandboxd/archive.gpg\n"
                       "pool_layers = raw:1:apt:jq=1.6-2.1 apt:sqlite3=3.40.1-2; python:1:apt:zip=3.0-13 mypkg==1.0\n",
                       "f")
              .ok());
  CHECK(c.apt_sources ==
        std::vector<std::string>{"https://deb.example:8443/debian stable main contrib", "http://local.test/flat ./"});
  CHECK(c.apt_keyring_file == "/etc/sandboxd/archive.gpg");
  auto raw = parse_pool_layer(c.pool_layers[0]);
  REQUIRE(raw.ok());
  CHECK(raw->language == Language::raw);
  CHECK(raw->packages == std::vector<std::string>{"apt:jq=1.6-2.1", "apt:sqlite3=3.40.1-2"});
  CHECK(parse_pool_layer(c.pool_layers[1])->packages == std::vector<std::string>{"apt:zip=3.0-13", "mypkg==1.0"});

  auto bad = [](const std::string& text) {
    Config x;
    auto r = config_parse(x, text, "f");
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(bad("apt_sources = http://deb.example/debian\n").find("URL SUITE") != std::string::npos);
  CHECK(bad("apt_sources = ftp://deb.example/debian stable main\n").find("http(s)") != std::string::npos);
  CHECK(bad("apt_sources = http://deb.example/debian stable main$(id)\n").find("not a suite") != std::string::npos);
  CHECK(bad("apt_sources = http://deb.example/debian [trusted=yes] main\n").find("not a suite") != std::string::npos);
  CHECK(bad("apt_sources = http://deb.example/debian -o main\n").find("not a suite") != std::string::npos);
  std::string many = "apt_sources =";
  for (int i = 0; i < 9; ++i) many += " http://d" + std::to_string(i) + ".example/debian stable main;";
  CHECK(bad(many + "\n").find("at most 8") != std::string::npos);
  CHECK(bad("apt_keyring_file = relative.gpg\n").find("absolute") != std::string::npos);
  CHECK(bad("pool_layers = raw:1:apt:jq\n").find("not pinned") != std::string::npos);
}
