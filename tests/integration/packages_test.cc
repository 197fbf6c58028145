// Packages against a real daemon: refusals before any VM starts, on every
// client path, and the layer cache as `sandboxctl layers` shows it
// (listing, drops, start-up recovery of corrupt layers).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
namespace fs = std::filesystem;

namespace {

CmdResult ctl(const TestDaemon& d, std::vector<std::string> args, const std::string& input = {}) {
  std::vector<std::string> argv = {SANDBOXCTL_BIN, "--socket", d.socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, input, std::chrono::seconds(60));
}

std::string sha256_of(const std::string& path) {
  auto r = run_command({"sha256sum", path});
  return r.out.substr(0, 64);
}

// A layer as the daemon publishes it: an image and its description (the
// image's hash, the request and the resolved lock). The test writes one
// directly, as a crash-free earlier daemon would have left it.
void seed_layer(const std::string& dir, const std::string& key, const std::string& image, const std::string& package,
                const std::vector<std::string>& lock) {
  fs::create_directories(dir);
  std::ofstream(dir + "/" + key + ".erofs", std::ios::binary) << image;
  std::string meta = "sandboxd-layer 1\nsha256 " + sha256_of(dir + "/" + key + ".erofs") + "\nlanguage python\nbytes " +
                     std::to_string(image.size()) + "\npackage " + package + "\n";
  for (const auto& l : lock) meta += "lock " + l + "\n";
  std::ofstream(dir + "/" + key + ".layer", std::ios::binary) << meta;
}

}  // namespace

TEST_CASE("packages: unpinned, unlisted and smuggling specifiers are refused before any VM starts") {
  TestDaemon d;
  std::string allow = fs::temp_directory_path().string() + "/sandboxd-allow-" + std::to_string(::getpid());
  std::ofstream(allow) << "# test allowlist\npython mypkg\njavascript left-pad\n";
  REQUIRE(d.start({"--package-allowlist", allow}));
  Client c(d.socket());

  struct Case {
    Language language;
    std::vector<std::string> packages;
    std::string expect;  // in the message
  };
  std::vector<Case> cases = {
      {Language::python, {"mypkg"}, "'mypkg': not pinned"},
      {Language::python, {"mypkg>=1.0"}, "not pinned"},
      {Language::python, {"pandas==2.1.4"}, "'pandas' is not on this host's package allowlist"},
      {Language::python, {"mypkg==1.0", "https://evil.example/x.whl"}, "URLs"},
      {Language::python, {"--index-url=http://127.0.0.1:9/"}, "options"},
      {Language::python, {"mypkg==1.0;os_name=='posix'"}, "shell syntax"},
      {Language::javascript, {"left-pad@^1.3.0"}, "not pinned"},
      {Language::javascript, {"lodash@4.17.21"}, "'lodash' is not on this host's package allowlist"},
      {Language::javascript, {"left-pad@file:../x"}, "URLs"},
      {Language::raw, {"mypkg==1.0"}, "raw runs take no packages"},
  };
  for (const auto& k : cases) {
    INFO(k.packages[0]);
    auto r = make_request(k.language, k.language == Language::javascript ? "console.log(1)" : "print(1)");
    r.packages = k.packages;
    // Straight to the daemon: libsandbox would refuse some of these itself.
    RawClient raw(d.socket());
    REQUIRE(raw.connected());
    REQUIRE(raw.send(proto::Run{5, r}));
    auto m = raw.receive(std::chrono::seconds(20));
    REQUIRE(m.has_value());
    auto* e = std::get_if<proto::ErrorReply>(&*m);
    REQUIRE(e != nullptr);
    CHECK(e->code == ErrorCode::package_not_allowed);
    CHECK_MESSAGE(e->message.find(k.expect) != std::string::npos, e->message);

    SessionOptions o;
    o.language = k.language;
    o.packages = k.packages;
    auto s = c.create_session(o);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == ErrorCode::package_not_allowed);
  }
  std::vector<std::string> many;
  for (int i = 0; i <= 50; ++i) many.push_back("mypkg==1." + std::to_string(i));
  auto r = make_request(Language::python, "print(1)");
  r.packages = many;
  auto big = c.run(r);
  REQUIRE_FALSE(big.ok());
  CHECK(big.error().code == ErrorCode::invalid_argument);

  // The CLI says which entry, and exits as for a sandbox failure.
  auto cli = ctl(d, {"run", "-p", "mypkg", "print(1)"});
  CHECK(cli.exit_code == 125);
  CHECK(cli.err.find("package_not_allowed") != std::string::npos);
  CHECK(cli.err.find("'mypkg'") != std::string::npos);

  // Nothing started for any of them.
  auto st = c.status();
  REQUIRE(st.ok());
  CHECK(st->vms == 0);
  CHECK(d.children().empty());
  fs::remove(allow);
}

TEST_CASE("packages: an unreadable allowlist is a clear error at start-up") {
  TestDaemon d;
  std::string allow = fs::temp_directory_path().string() + "/sandboxd-badallow-" + std::to_string(::getpid());
  std::ofstream(allow) << "python ok\nruby rails\n";
  CHECK_FALSE(d.start({"--package-allowlist", allow}));
  CHECK(d.log().find("package allowlist line 2: unknown language 'ruby'") != std::string::npos);
  fs::remove(allow);
}

TEST_CASE("layers: the cache as sandboxctl shows it; drops; corrupt layers removed at start-up") {
  TestDaemon d;
  // Seeded before start: one good layer, one whose image no longer has its hash.
  char tmpl[] = "/tmp/sandboxd-layers-it.XXXXXX";
  std::string state = ::mkdtemp(tmpl);
  std::string good = "py-" + std::string(40, 'a'), bad = "py-" + std::string(40, 'b');
  seed_layer(state + "/layers", good, std::string(4096, 'G'), "mypkg==1.0",
             {"mydep==0.1 sha256:1111", "mypkg==1.0 sha256:2222"});
  seed_layer(state + "/layers", bad, std::string(4096, 'B'), "other==2.0", {"other==2.0 sha256:3333"});
  {
    std::fstream f(state + "/layers/" + bad + ".erofs", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('X');
  }
  REQUIRE(d.start({"--state-dir", state}));
  CHECK(d.log().find("layer cache: removed " + bad) != std::string::npos);
  CHECK_FALSE(fs::exists(state + "/layers/" + bad + ".erofs"));

  auto list = ctl(d, {"layers"});
  CHECK(list.exit_code == 0);
  CHECK(list.out.find(good) != std::string::npos);
  CHECK(list.out.find("mypkg==1.0") != std::string::npos);
  CHECK(list.out.find("    mydep==0.1 sha256:1111") != std::string::npos);
  CHECK(list.out.find(bad) == std::string::npos);
  auto json = ctl(d, {"layers", "--json"});
  CHECK(json.exit_code == 0);
  CHECK(json.out.find("\"key\":\"" + good + "\"") != std::string::npos);
  CHECK(json.out.find("\"lock\":[\"mydep==0.1 sha256:1111\",\"mypkg==1.0 sha256:2222\"]") != std::string::npos);
  CHECK(json.out.find("\"building\":false") != std::string::npos);

  Client c(d.socket());
  auto layers = c.layers();
  REQUIRE(layers.ok());
  REQUIRE(layers->size() == 1);
  CHECK(layers->at(0).bytes == 4096);
  CHECK(c.layers("../../etc/passwd").error().code == ErrorCode::invalid_argument);
  CHECK(c.layers(bad).error().code == ErrorCode::not_found);
  auto dropped = ctl(d, {"layers", "--drop", good});
  CHECK(dropped.exit_code == 0);
  CHECK_FALSE(fs::exists(state + "/layers/" + good + ".erofs"));
  CHECK(ctl(d, {"layers", "--drop", good, "--all"}).exit_code == 2);
  CHECK(ctl(d, {"layers", "--all", "--json"}).out == "[]\n");
  d.stop();
  fs::remove_all(state);
}

TEST_CASE("layers: a cached layer is verified, attached read-only and found by the interpreter; in use it stays") {
  auto have = run_command({"sh", "-c", "command -v mkfs.erofs"});
  if (have.exit_code != 0) {
    MESSAGE("skipped: mkfs.erofs (erofs-utils) is not installed on this host; the test builds its layer with it");
    return;
  }
  char tmpl[] = "/tmp/sandboxd-layers-attach.XXXXXX";
  std::string work = ::mkdtemp(tmpl);
  std::string state = work + "/state";
  fs::create_directories(state);

  // The key the daemon derives for this request, from its refusal to build it.
  std::string key;
  {
    TestDaemon d;
    REQUIRE(d.start({"--state-dir", state}));
    auto r = make_request(Language::python, "print(1)");
    r.packages = {"MyPkg==1.0"};
    auto res = Client(d.socket()).run(r);
    REQUIRE_FALSE(res.ok());
    CHECK(res.error().code == ErrorCode::package_install_failed);
    auto at = res.error().message.find("layer py-");
    REQUIRE(at != std::string::npos);
    key = res.error().message.substr(at + 6, 43);
    // A failed build leaves nothing behind.
    CHECK(list_dir(state + "/layers").empty());
  }

  // A layer as a builder makes it: site-packages with a package and its dependency.
  fs::create_directories(work + "/tree/python/mypkg");
  fs::create_directories(work + "/tree/python/mydep");
  std::ofstream(work + "/tree/python/mypkg/__init__.py") << "from mydep import VALUE\n__version__ = '1.0'\n";
  std::ofstream(work + "/tree/python/mydep/__init__.py") << "VALUE = 42\n";
  auto mk = run_command({"mkfs.erofs", "-T0", work + "/layer.erofs", work + "/tree"});
  REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
  std::ifstream in(work + "/layer.erofs", std::ios::binary);
  std::string image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  seed_layer(state + "/layers", key, image, "mypkg==1.0", {"mydep==0.1 sha256:1111", "mypkg==1.0 sha256:2222"});

  TestDaemon d;
  REQUIRE(d.start({"--state-dir", state}));
  Client c(d.socket());
  auto r = make_request(Language::python,
                        "import mypkg, os\nprint(mypkg.__version__, mypkg.VALUE, sorted(os.listdir('/sys/class/net')))\n"
                        "open(mypkg.__file__, 'a')\n");
  r.packages = {"mypkg==1.0"};
  auto res = c.run(r);
  REQUIRE_MESSAGE(res.ok(), res.error().describe());
  // Found by the interpreter; no network device although it asked for packages; read-only.
  CHECK(res->stdout_data == "1.0 42 ['lo']\n");
  CHECK(res->stderr_data.find("Read-only file system") != std::string::npos);
  CHECK(res->layer.key == key);
  CHECK(res->layer.cache == "hit");
  CHECK(res->layer.build_ms == 0);
  CHECK(res->vm_start == "boot");

  // A run without packages sees no layer.
  auto plain = c.run(make_request(Language::python, "import importlib.util as u\nprint(u.find_spec('mypkg'))"));
  REQUIRE(plain.ok());
  CHECK(plain->stdout_data == "None\n");
  CHECK(plain->layer.key.empty());

  // In use by a session: listed with its user, and neither dropped nor evicted.
  SessionOptions o;
  o.packages = {"mypkg==1.0"};
  auto s = c.create_session(o);
  REQUIRE_MESSAGE(s.ok(), s.error().describe());
  CHECK(s->info().layer.key == key);
  auto listed = c.layers();
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 1);
  CHECK(listed->at(0).users == 1);
  CHECK(c.layers(key).error().code == ErrorCode::capacity);
  CHECK(c.layers("", true).value().size() == 1);
  auto e = s->exec("import mypkg\nprint(mypkg.VALUE)");
  REQUIRE(e.ok());
  CHECK(e->stdout_data == "42\n");
  REQUIRE(s->close().ok());

  // One byte of the image changes: the next attach finds it, removes it,
  // and tries to build it again (which this host cannot).
  {
    std::fstream f(state + "/layers/" + key + ".erofs", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2000);
    f.put('\x5a');
  }
  auto again = c.run(r);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == ErrorCode::package_install_failed);
  CHECK_FALSE(fs::exists(state + "/layers/" + key + ".erofs"));
  CHECK(c.layers().value().empty());
  d.stop();
  fs::remove_all(work);
}
