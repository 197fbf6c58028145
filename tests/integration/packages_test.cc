// Packages against a real daemon: refusals before any VM starts, on every
// client path, and the layer cache as `sandboxctl layers` shows it
// (listing, drops, start-up recovery of corrupt layers).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

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

// The test images without their package builder: a host that can attach
// layers but not build them. Links, not copies; removed by the caller.
std::string images_without_builder(const std::string& dir) {
  fs::create_directories(dir);
  std::ifstream in(images_dir() + "/manifest");
  std::ofstream out(dir + "/manifest");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string hash, role, file;
    fields >> hash >> role >> file;
    if (role == "builder" || role == "builder_packages") continue;
    out << line << "\n";
    if (!file.empty() && line[0] != '#') fs::create_symlink(images_dir() + "/" + file, dir + "/" + file);
  }
  return dir;
}

bool has_builder() {
  std::ifstream in(images_dir() + "/manifest");
  for (std::string line; std::getline(in, line);)
    if (line.find(" builder builder") != std::string::npos) return true;
  return false;
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
      {Language::raw, {"mypkg==1.0"}, "raw runs take only Debian packages"},
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
  std::string images = images_without_builder(work + "/images");

  // The key the daemon derives for this request, from its refusal to build it.
  std::string key;
  {
    TestDaemon d;
    REQUIRE(d.start({"--state-dir", state}, images));
    auto r = make_request(Language::python, "print(1)");
    r.packages = {"MyPkg==1.0"};
    auto res = Client(d.socket()).run(r);
    REQUIRE_FALSE(res.ok());
    CHECK(res.error().code == ErrorCode::package_install_failed);
    CHECK(res.error().message.find("no package builder image") != std::string::npos);
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
  REQUIRE(d.start({"--state-dir", state}, images));
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

namespace {

// A package index on loopback (make_index.py's wheels, served over HTTPS
// by net_hosts.py as pypi.test) and a daemon whose builders install from
// it. Shared by the build cases: each build boots a builder VM.
struct PackageIndex : LoopbackHosts {
  TestDaemon daemon;
  std::string state;

  static std::string make_index() {
    char tmpl[] = "/tmp/sandboxd-index.XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    auto r = run_command({"/usr/bin/python3", SANDBOXD_SOURCE_DIR "/tests/integration/make_index.py", dir});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return dir;
  }

  explicit PackageIndex(std::string index) : LoopbackHosts({"pypi.test=127.0.0.9"}, index), index_(std::move(index)) {
    if (!skip.empty()) return;
    char tmpl[] = "/tmp/sandboxd-pkgstate.XXXXXX";
    state = ::mkdtemp(tmpl);
    auto args = daemon_args();
    args.insert(args.end(), {"--state-dir", state, "--snapshots", "on"});
    if (!daemon.start(args)) skip = "sandboxd did not start: " + daemon.log();
  }
  // What a daemon needs to build from this index: its names, its CA.
  std::vector<std::string> daemon_args() const {
    return {"--network-resolver", "127.0.0.1:" + std::to_string(dns), "--network-allowed-ranges", "127.0.0.0/8",
            "--extra-ca-file", dir + "/ca.pem", "--python-index-url", index_url(),
            "--apt-sources", apt_source(), "--apt-keyring-file", index_ + "/debian/keyring.gpg"};
  }
  ~PackageIndex() {
    daemon.stop();
    fs::remove_all(state);
    fs::remove_all(index_);
  }
  std::string index_url() const { return "https://pypi.test:" + std::to_string(https) + "/simple"; }
  // Plain HTTP, as Debian's own archives are served: the signed index is
  // what apt trusts.
  std::string apt_source() const { return "http://pypi.test:" + std::to_string(http) + "/debian sbx main"; }
  size_t requests_for(const std::string& path_part) const {
    size_t n = 0;
    for (const auto& r : index_requests()) n += r.find(path_part) != std::string::npos;
    return n;
  }

 private:
  std::string index_;
};

PackageIndex* package_index() {
  static PackageIndex* index = [] {
    auto* p = new PackageIndex(PackageIndex::make_index());
    at_suite_end([p] { delete p; });
    return p;
  }();
  if (!has_builder()) {
    MESSAGE("SKIPPED: the images have no package builder (images/build.sh makes builder.erofs)");
    return nullptr;
  }
  if (!index->skip.empty()) {
    MESSAGE("SKIPPED: " << index->skip);
    return nullptr;
  }
  return index;
}

RunRequest with_packages(Language language, std::string code, std::vector<std::string> packages) {
  auto r = make_request(language, std::move(code), 60'000);
  r.packages = std::move(packages);
  return r;
}

}  // namespace

TEST_SUITE("package builds") {

TEST_CASE("builds: a layer is built from the index with its dependency locked, compiled, then hit") {
  auto* index = package_index();
  if (!index) return;
  Client c(index->daemon.socket());
  auto code = "import mypkg, os\nprint(mypkg.__version__, mypkg.answer(), os.path.exists(mypkg.__cached__))\n";
  auto first = c.run(with_packages(Language::python, code, {"mypkg==1.0"}));
  REQUIRE_MESSAGE(first.ok(), first.error().describe());
  INFO("stderr: " << first->stderr_data);
  // Found through its dependency; bytecode compiled at install, so a first
  // import reads it.
  CHECK(first->stdout_data == "1.0 42 True\n");
  CHECK(first->layer.cache == "built");
  CHECK(first->layer.build_ms > 0);
  CHECK(index->requests_for("/files/sbxdep-2.0-py3-none-any.whl") == 1);

  auto layers = c.layers();
  REQUIRE(layers.ok());
  REQUIRE(layers->size() == 1);
  const auto& layer = layers->at(0);
  CHECK(layer.key == first->layer.key);
  CHECK(layer.packages == std::vector<std::string>{"mypkg==1.0"});
  REQUIRE(layer.lock.size() == 2);
  // Every installed package with its version and the hash the index gave.
  std::string lock = layer.lock[0] + "\n" + layer.lock[1];
  CHECK(lock.find("mypkg==1.0 sha256:") != std::string::npos);
  CHECK(lock.find("sbxdep==2.0 sha256:") != std::string::npos);

  // The first VM on the layer booted, and a template with the layer was
  // saved beside it: the next run with these packages restores.
  CHECK(first->vm_start == "boot");
  bool saved = false;
  for (int i = 0; i < 600 && !saved; ++i) {
    auto snaps = c.snapshots();
    saved = snaps.ok() && snaps->size() == 1;
    if (!saved) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(saved);
  auto second = c.run(with_packages(Language::python, code, {"mypkg==1.0"}));
  REQUIRE_MESSAGE(second.ok(), second.error().describe());
  CHECK(second->stdout_data == "1.0 42 True\n");
  CHECK(second->layer.cache == "hit");
  CHECK(second->layer.build_ms == 0);
  CHECK(second->vm_start == "snapshot");
  // A run without packages has a snapshot of its own, never the layer's.
  auto plain = c.run(make_request(Language::python, "import importlib.util as u\nprint(u.find_spec('mypkg'))"));
  REQUIRE(plain.ok());
  CHECK(plain->stdout_data == "None\n");
  CHECK(plain->vm_start == "boot");
  CHECK(index->requests_for("/files/sbxdep") == 1);
  // Nothing of the builder is left: its VM, its scratch file.
  CHECK(index->daemon.wait_children_at_most(0, std::chrono::seconds(30)));
  for (const auto& f : list_dir(index->state + "/layers")) CHECK(f.find(".tmp") == std::string::npos);
}

TEST_CASE("builds: the network stays off for a run with packages; the index is out of its reach") {
  auto* index = package_index();
  if (!index) return;
  Client c(index->daemon.socket());
  auto requests = index->index_requests().size();
  auto code = "import mypkg, urllib.request\ntry:\n    urllib.request.urlopen('" + index->index_url() +
              "/mypkg/', timeout=10)\n    print('reached')\nexcept Exception as e:\n    print('blocked', type(e).__name__)\n";
  auto r = c.run(with_packages(Language::python, code, {"mypkg==1.0"}));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data.starts_with("blocked"));
  CHECK(index->index_requests().size() == requests);
}

TEST_CASE("builds: two requests for one layer at once share one build") {
  auto* index = package_index();
  if (!index) return;
  Client c(index->daemon.socket());
  Result<RunResult> results[2] = {Error::make(ErrorCode::internal, "not run"), Error::make(ErrorCode::internal, "not run")};
  std::thread other([&] { results[1] = c.run(with_packages(Language::python, "import lonely\nprint(lonely.__version__)", {"lonely==0.3"})); });
  results[0] = c.run(with_packages(Language::python, "import lonely\nprint(lonely.__version__)", {"lonely==0.3"}));
  other.join();
  std::vector<std::string> caches;
  for (auto& r : results) {
    REQUIRE_MESSAGE(r.ok(), r.error().describe());
    CHECK(r->stdout_data == "0.3\n");
    caches.push_back(r->layer.cache);
  }
  std::sort(caches.begin(), caches.end());
  // The second either joined the build or, if it came after it, hit it.
  CHECK(caches[0] == "built");
  CHECK((caches[1] == "joined" || caches[1] == "hit"));
  CHECK(index->requests_for("/files/lonely-0.3") == 1);
}

TEST_CASE("builds: a package the index lacks fails with pip's own words and leaves nothing; the next request retries") {
  auto* index = package_index();
  if (!index) return;
  Client c(index->daemon.socket());
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto r = c.run(with_packages(Language::python, "print(1)", {"nosuchpkg==1.0"}));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::package_install_failed);
    CHECK_MESSAGE(r.error().message.find("No matching distribution found for nosuchpkg==1.0") != std::string::npos,
                  r.error().message);
    CHECK(index->requests_for("/simple/nosuchpkg/") == static_cast<size_t>(attempt));
    CHECK(index->daemon.wait_children_at_most(0, std::chrono::seconds(30)));
    auto layers = c.layers();
    REQUIRE(layers.ok());
    for (const auto& l : *layers) CHECK(l.packages != std::vector<std::string>{"nosuchpkg==1.0"});
    for (const auto& f : list_dir(index->state + "/layers")) CHECK(f.find(".tmp") == std::string::npos);
  }
}

TEST_CASE("builds: a corrupted layer is found on attach and built again; a session starts on a layer") {
  auto* index = package_index();
  if (!index) return;
  Client c(index->daemon.socket());
  auto code = "import mypkg\nprint(mypkg.answer())";
  auto first = c.run(with_packages(Language::python, code, {"mypkg==1.0"}));
  REQUIRE_MESSAGE(first.ok(), first.error().describe());
  std::string image = index->state + "/layers/" + first->layer.key + ".erofs";
  REQUIRE(fs::exists(image));
  {
    std::fstream f(image, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1500);
    f.put('\x5a');
  }
  auto again = c.run(with_packages(Language::python, code, {"mypkg==1.0"}));
  REQUIRE_MESSAGE(again.ok(), again.error().describe());
  CHECK(again->stdout_data == "42\n");
  CHECK(again->layer.cache == "built");
  CHECK(index->daemon.log().find("layer " + first->layer.key + ": image hash differs from the recorded one; removed") !=
        std::string::npos);

  SessionOptions o;
  o.packages = {"mypkg==1.0"};
  auto s = c.create_session(o);
  REQUIRE_MESSAGE(s.ok(), s.error().describe());
  CHECK(s->info().layer.cache == "hit");
  auto e = s->exec("import mypkg\nprint(mypkg.__version__)");
  REQUIRE(e.ok());
  CHECK(e->stdout_data == "1.0\n");
  REQUIRE(s->close().ok());
}

TEST_CASE("builds: pool_layers keeps warm VMs with a package set's layer; a run with that set takes one") {
  auto* index = package_index();
  if (!index) return;
  TestDaemon d;
  auto args = index->daemon_args();
  args.insert(args.end(), {"--pool-layers", "python:1:lonely==0.3"});
  REQUIRE(d.start(args));
  Client c(d.socket());
  // Built at start, then one VM with it booted into the pool.
  bool warm = false;
  std::string key;
  for (int i = 0; i < 3000 && !warm; ++i) {
    if (auto st = c.status(); st.ok())
      for (const auto& p : st->pool)
        if (!p.layer.empty() && p.ready == 1) warm = true, key = p.layer;
    if (!warm) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE_MESSAGE(warm, d.log());
  auto r = c.run(with_packages(Language::python, "import lonely\nprint(lonely.__version__)", {"lonely==0.3"}));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "0.3\n");
  CHECK(r->vm_start == "pool");
  CHECK(r->layer.cache == "hit");
  CHECK(r->layer.key == key);
  // Held by the pool: never dropped while it keeps VMs of it.
  CHECK(c.layers(key).error().code == ErrorCode::capacity);
  auto st = c.status();
  REQUIRE(st.ok());
  bool counted = false;
  for (const auto& p : st->pool) counted = counted || (p.layer == key && p.hits == 1);
  CHECK(counted);
  d.stop();
}

TEST_CASE("builds: Debian packages from the operator's signed archive lie over the root, without setuid, then hit") {
  auto* index = package_index();
  if (!index) return;
  Client c(index->daemon.socket());
  // The package's own command, its dependency's file, a file it ships
  // under /bin (the root's /bin links to /usr/bin and must stay so), its
  // setuid file without the bit, dpkg's view, and a root still read-only.
  auto code =
      "sbxhello; sbxhello-old-path; stat -c '%A %U' /usr/bin/sbxhello-suid; /bin/sh -c 'echo root intact'\n"
      "dpkg-query -W -f '${Status} ${Version}\\n' sbxhello\n"
      "touch /usr/bin/x 2>/dev/null || echo read-only\n";
  auto expected = "hello from a Debian layer\nold path\n-rwxr-xr-x root\nroot intact\ninstall ok installed 1.0-1\nread-only\n";
  auto first = c.run(with_packages(Language::raw, code, {"apt:sbxhello=1.0-1"}));
  REQUIRE_MESSAGE(first.ok(), first.error().describe());
  INFO("stderr: " << first->stderr_data);
  CHECK(first->stdout_data == expected);
  CHECK(first->layer.cache == "built");
  CHECK(first->layer.key.starts_with("sh-"));
  CHECK(index->requests_for("/debian/pool/sbxhello_1.0-1_all.deb") == 1);
  auto layers = c.layers();
  REQUIRE(layers.ok());
  std::string lock;
  for (const auto& l : *layers)
    if (l.key == first->layer.key)
      for (const auto& line : l.lock) lock += line + "\n";
  // Both packages, with the versions apt resolved and the archive's hashes.
  CHECK(lock.find("apt:sbxhello=1.0-1 sha256:") != std::string::npos);
  CHECK(lock.find("apt:sbxhello-data=1.0-1 sha256:") != std::string::npos);

  auto second = c.run(with_packages(Language::raw, code, {"apt:sbxhello=1.0-1"}));
  REQUIRE_MESSAGE(second.ok(), second.error().describe());
  CHECK(second->stdout_data == expected);
  CHECK(second->layer.cache == "hit");
  CHECK(index->requests_for("/debian/pool/sbxhello_1.0-1_all.deb") == 1);
  // A run without the layer has the root as it was.
  auto plain = c.run(make_request(Language::raw, "command -v sbxhello || echo absent; ls /usr/share/sbxhello 2>&1 | wc -l"));
  REQUIRE(plain.ok());
  CHECK(plain->stdout_data == "absent\n1\n");
}

TEST_CASE("builds: one layer holds Debian and Python packages together") {
  auto* index = package_index();
  if (!index) return;
  Client c(index->daemon.socket());
  // A Debian package's Python module gets bytecode as the root's modules
  // have it (unchecked: the flags word is 1), made in the build: what
  // keeps a module that replaces one of the root's from running the
  // root's bytecode.
  auto code = "import mypkg, subprocess, sbxhellomod, importlib.util\n"
              "print(mypkg.answer(), subprocess.run(['sbxhello'], capture_output=True, text=True).stdout.strip())\n"
              "pyc = importlib.util.cache_from_source(sbxhellomod.__file__)\n"
              "print(sbxhellomod.VALUE, sbxhellomod.__file__, open(pyc, 'rb').read(8)[4])\n";
  auto r = c.run(with_packages(Language::python, code, {"mypkg==1.0", "apt:sbxhello=1.0-1"}));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  INFO("stderr: " << r->stderr_data);
  CHECK(r->stdout_data == "42 hello from a Debian layer\nmodule /usr/lib/python3/dist-packages/sbxhellomod.py 1\n");
  CHECK(r->layer.key.starts_with("py-"));
  auto layers = c.layers();
  REQUIRE(layers.ok());
  for (const auto& l : *layers)
    if (l.key == r->layer.key) {
      CHECK(l.packages == std::vector<std::string>{"apt:sbxhello=1.0-1", "mypkg==1.0"});
      CHECK(l.lock.size() == 4);
    }
}

TEST_CASE("builds: a Debian package the archive lacks, or an archive of an unknown key, fails with apt's words") {
  auto* index = package_index();
  if (!index) return;
  Client c(index->daemon.socket());
  auto r = c.run(with_packages(Language::raw, "true", {"apt:nosuchpkg=1.0"}));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::package_install_failed);
  CHECK_MESSAGE(r.error().message.find("Unable to locate package nosuchpkg") != std::string::npos, r.error().message);
  CHECK(index->daemon.wait_children_at_most(0, std::chrono::seconds(30)));
  auto layers = c.layers();
  REQUIRE(layers.ok());
  for (const auto& l : *layers) CHECK(l.packages != std::vector<std::string>{"apt:nosuchpkg=1.0"});
  for (const auto& f : list_dir(index->state + "/layers")) CHECK(f.find(".tmp") == std::string::npos);

  // Without the operator's keyring the builder trusts only Debian's keys:
  // the test archive's index is refused and nothing is downloaded.
  TestDaemon d;
  auto args = index->daemon_args();
  args.resize(args.size() - 2);
  REQUIRE(d.start(args));
  Client other(d.socket());
  auto downloads = index->requests_for("/debian/pool/");
  auto unsigned_run = other.run(with_packages(Language::raw, "true", {"apt:sbxhello=1.0-1"}));
  REQUIRE_FALSE(unsigned_run.ok());
  CHECK(unsigned_run.error().code == ErrorCode::package_install_failed);
  CHECK_MESSAGE((unsigned_run.error().message.find("NO_PUBKEY") != std::string::npos ||
                 unsigned_run.error().message.find("not signed") != std::string::npos),
                unsigned_run.error().message);
  CHECK(index->requests_for("/debian/pool/") == downloads);
  d.stop();
}

TEST_CASE("builds: an npm package from the real registry, installed without its scripts") {
  if (!has_builder()) {
    MESSAGE("SKIPPED: the images have no package builder (images/build.sh makes builder.erofs)");
    return;
  }
  auto probe = run_command({"curl", "-sf", "-o", "/dev/null", "--max-time", "15", "https://registry.npmjs.org/left-pad"},
                           {}, std::chrono::seconds(20));
  if (probe.exit_code != 0) {
    MESSAGE("SKIPPED: the npm registry does not answer from this host (curl exit " << probe.exit_code << ")");
    return;
  }
  // This host may reach its registry through an egress proxy: at an
  // address in a special-purpose range, with a CA of the host's own. The
  // operator allows both, as sandboxd.conf would, and builders get them.
  auto addr = run_command({"getent", "ahostsv4", "registry.npmjs.org"});
  std::vector<std::string> args = {"--network-allowed-ranges", addr.out.substr(0, addr.out.find(' ')) + "/32"};
  std::string cas = fs::temp_directory_path().string() + "/sandboxd-host-cas-" + std::to_string(::getpid());
  auto local = run_command({"sh", "-c", "cat /usr/local/share/ca-certificates/*.crt 2>/dev/null"});
  if (local.out.find("BEGIN CERTIFICATE") != std::string::npos) {
    std::ofstream(cas) << local.out;
    args.insert(args.end(), {"--extra-ca-file", cas});
  }
  TestDaemon d;
  bool started = d.start(args);
  fs::remove(cas);
  REQUIRE_MESSAGE(started, d.log());
  Client c(d.socket());
  auto r = c.run(with_packages(Language::javascript, "console.log(require('left-pad')('7', 3, '0'))", {"left-pad@1.3.0"}));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "007\n");
  CHECK(r->layer.cache == "built");
  auto layers = c.layers();
  REQUIRE(layers.ok());
  REQUIRE(layers->size() == 1);
  REQUIRE(layers->at(0).lock.size() == 1);
  CHECK(layers->at(0).lock[0].starts_with("left-pad@1.3.0 sha512-"));
  d.stop();
}

}  // TEST_SUITE
