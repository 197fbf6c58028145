// Shared caches between nodes (SPEC F27) with real daemons: package layers
// go through an S3-compatible store on loopback (s3_store.py, which checks
// every request's SigV4 signature). Node A builds a layer and uploads it;
// node B, with an empty cache, fetches it instead of building; an object
// corrupted in the store is refused by its hash and B builds; a store that
// cannot be reached means a local build. Every build boots a builder VM.
// Snapshot templates go the same way: node A saves one and uploads it;
// node B, with an empty state dir, fetches it while it boots and restores
// from it without saving its own; a template whose object does not match
// its description's SHA-256 is refused and the node saves its own.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <zstd.h>

#include "common/unique_fd.h"
#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
namespace fs = std::filesystem;

namespace {

bool images_have_builder() {
  std::ifstream in(images_dir() + "/manifest");
  for (std::string line; std::getline(in, line);)
    if (line.find(" builder builder") != std::string::npos) return true;
  return false;
}

std::string temp_dir(const char* name) {
  std::string tmpl = std::string("/tmp/sandboxd-") + name + ".XXXXXX";
  return ::mkdtemp(tmpl.data());
}

constexpr const char* kAccessKey = "SBXTESTKEY";
constexpr const char* kSecret = "sbx/test+secret";

// s3_store.py on loopback, signed requests only, its objects as files.
struct S3Store {
  std::string dir = temp_dir("s3");
  int port = 0;
  pid_t pid = -1;
  int stdin_fd = -1;

  S3Store() {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(p[0], 0);
      ::execl("/usr/bin/python3", "python3", SANDBOXD_SOURCE_DIR "/tests/integration/s3_store.py", dir.c_str(),
              "--access-key", kAccessKey, "--secret", kSecret, nullptr);
      ::_exit(127);
    }
    ::close(p[0]);
    stdin_fd = p[1];
    for (int i = 0; i < 200 && !fs::exists(dir + "/port"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto text = slurp(dir + "/port");
    if (!text.empty()) port = std::stoi(text);
  }
  ~S3Store() {
    ::close(stdin_fd);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    fs::remove_all(dir);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port) + "/sbx-cache/site-1"; }
  std::string object(const std::string& name) const { return dir + "/objects/sbx-cache/site-1/" + name; }
  std::string credentials() const {
    auto path = dir + "/credentials";
    std::ofstream(path) << "[default]\naws_access_key_id = " << kAccessKey << "\naws_secret_access_key = " << kSecret
                        << "\n";
    return path;
  }
  size_t requests(const std::string& part) const {
    std::istringstream in(slurp(dir + "/requests.log"));
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find(part) != std::string::npos;
    return n;
  }
};

// The index (make_index.py's wheels as pypi.test), the store, and nodes
// that build from the one and share through the other.
struct Cluster : LoopbackHosts {
  S3Store store;
  std::string index;
  std::vector<std::unique_ptr<TestDaemon>> nodes;
  std::vector<std::string> states;
  std::map<const TestDaemon*, std::string> state_of;

  static std::string make_index() {
    auto dir = temp_dir("index");
    auto r = run_command({"/usr/bin/python3", SANDBOXD_SOURCE_DIR "/tests/integration/make_index.py", dir});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return dir;
  }
  explicit Cluster(std::string index_dir) : LoopbackHosts({"pypi.test=127.0.0.9"}, index_dir), index(std::move(index_dir)) {
    if (skip.empty() && store.port == 0) skip = "the loopback object store did not start";
  }
  ~Cluster() {
    for (auto& n : nodes) n->stop();
    for (auto& s : states) fs::remove_all(s);
    fs::remove_all(index);
  }
  // A node with an empty cache whose store is `url` (the cluster's by default).
  TestDaemon* node(const std::string& url = {}, const std::vector<std::string>& extra = {}) {
    auto state = temp_dir("node");
    states.push_back(state);
    auto d = std::make_unique<TestDaemon>();
    std::vector<std::string> args = {"--state-dir", state, "--network-resolver", "127.0.0.1:" + std::to_string(dns),
                                     "--network-allowed-ranges", "127.0.0.0/8", "--extra-ca-file", dir + "/ca.pem",
                                     "--python-index-url", "https://pypi.test:" + std::to_string(https) + "/simple",
                                     "--cache-store-url", url.empty() ? store.url() : url, "--cache-store-credentials",
                                     store.credentials()};
    args.insert(args.end(), extra.begin(), extra.end());
    bool started = d->start(args);
    REQUIRE_MESSAGE(started, d->log());
    state_of[d.get()] = state;
    nodes.push_back(std::move(d));
    return nodes.back().get();
  }
  size_t index_requests_for(const std::string& part) const {
    size_t n = 0;
    for (const auto& r : index_requests()) n += r.find(part) != std::string::npos;
    return n;
  }
};

Cluster* cluster() {
  static Cluster* c = [] {
    auto* p = new Cluster(Cluster::make_index());
    at_suite_end([p] { delete p; });
    return p;
  }();
  if (!images_have_builder()) {
    MESSAGE("SKIPPED: the images have no package builder (images/build.sh makes builder.erofs)");
    return nullptr;
  }
  if (!c->skip.empty()) {
    MESSAGE("SKIPPED: " << c->skip);
    return nullptr;
  }
  return c;
}

RunRequest with_mypkg() {
  auto r = make_request(Language::python, "import mypkg\nprint(mypkg.__version__, mypkg.answer())\n", 60'000);
  r.packages = {"mypkg==1.0"};
  return r;
}

// The value of one sample of the daemon's metrics (-1: absent).
long metric(const TestDaemon& d, const std::string& sample) {
  auto text = Client(d.socket()).metrics();
  if (!text) return -1;
  auto at = text->find("\n" + sample + " ");
  return at == std::string::npos ? -1 : std::stol(text->substr(at + sample.size() + 2));
}

const std::string kFetched = "sandboxd_cache_fetches_total{kind=\"layer\",result=\"hit\"}";
const std::string kCorrupt = "sandboxd_cache_fetches_total{kind=\"layer\",result=\"corrupt\"}";
const std::string kError = "sandboxd_cache_fetches_total{kind=\"layer\",result=\"error\"}";
const std::string kMiss = "sandboxd_cache_fetches_total{kind=\"layer\",result=\"miss\"}";
const std::string kUploaded = "sandboxd_cache_uploads_total{kind=\"layer\",result=\"ok\"}";

// Waits (bounded) until the store has layer `key`'s description: uploads
// run in the background, after the run that built the layer answered.
bool uploaded(const S3Store& store, const std::string& key, size_t puts) {
  for (int i = 0; i < 600; ++i) {
    if (store.requests("PUT /sbx-cache/site-1/layers/" + key + ".layer 200") >= puts) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TestDaemon* node_a = nullptr;
TestDaemon* node_b = nullptr;
std::string layer;

}  // namespace

TEST_SUITE("shared caches") {

TEST_CASE("shared caches: a layer one node built and uploaded is fetched by another, which runs no build") {
  auto* c = cluster();
  if (!c) return;
  node_a = c->node();
  auto built = Client(node_a->socket()).run(with_mypkg());
  REQUIRE_MESSAGE(built.ok(), built.error().describe());
  CHECK(built->stdout_data == "1.0 42\n");
  CHECK(built->layer.cache == "built");
  layer = built->layer.key;
  MESSAGE("node A built the layer in " << built->layer.build_ms << " ms");
  CHECK(metric(*node_a, kMiss) == 1);
  REQUIRE(uploaded(c->store, layer, 1));
  CHECK(metric(*node_a, kUploaded) == 1);
  CHECK(fs::file_size(c->store.object("layers/" + layer + ".erofs")) > 0);

  node_b = c->node();
  auto index_before = c->index_requests().size();
  auto fetched = Client(node_b->socket()).run(with_mypkg());
  REQUIRE_MESSAGE(fetched.ok(), fetched.error().describe());
  CHECK(fetched->stdout_data == "1.0 42\n");
  CHECK(fetched->layer.key == layer);
  CHECK(fetched->layer.cache == "fetched");
  MESSAGE("node B fetched it in " << fetched->layer.build_ms << " ms");
  // Nothing asked of the index: no builder ran on B.
  CHECK(c->index_requests().size() == index_before);
  CHECK(metric(*node_b, kFetched) == 1);
  CHECK(metric(*node_b, "sandboxd_layer_requests_total{cache=\"fetched\"}") == 1);
  CHECK(metric(*node_b, "sandboxd_layer_builds_total{result=\"ok\"}") == 0);
  // The layer on B is A's: same lock, same image.
  auto on_a = Client(node_a->socket()).layers().value();
  auto on_b = Client(node_b->socket()).layers().value();
  REQUIRE(on_b.size() == 1);
  CHECK(on_b[0].lock == on_a.at(0).lock);
  CHECK(on_b[0].bytes == on_a.at(0).bytes);
  // Every request the store answered was signed with the nodes' key.
  CHECK(c->store.requests(" 403") == 0);
  // A second run on B is an ordinary hit.
  auto again = Client(node_b->socket()).run(with_mypkg());
  REQUIRE(again.ok());
  CHECK(again->layer.cache == "hit");
}

TEST_CASE("shared caches: an object corrupted in the store is refused by its hash; the node builds and puts its own") {
  auto* c = cluster();
  if (!c || !node_b) return;
  auto image = c->store.object("layers/" + layer + ".erofs");
  {
    std::fstream f(image, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(image) / 2));
    f.put('\x5a');
  }
  Client b(node_b->socket());
  REQUIRE(b.layers(layer).ok());  // dropped: B must get it again
  auto index_before = c->index_requests_for("/files/");
  auto r = b.run(with_mypkg());
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "1.0 42\n");
  CHECK(r->layer.cache == "built");
  CHECK(metric(*node_b, kCorrupt) == 1);
  CHECK(c->index_requests_for("/files/") > index_before);
  CHECK(node_b->log().find("SHA-256") != std::string::npos);
  // B's good build replaced the bad object.
  REQUIRE(uploaded(c->store, layer, 2));
  auto on_b = b.layers().value();
  REQUIRE(on_b.size() == 1);
  auto sha256_of = [](const std::string& path) { return run_command({"sha256sum", path}).out.substr(0, 64); };
  CHECK(sha256_of(image) == sha256_of(c->state_of[node_b] + "/layers/" + layer + ".erofs"));
}

TEST_CASE("shared caches: a store that cannot be reached means a local build, never a failure") {
  auto* c = cluster();
  if (!c) return;
  // A port nobody listens on: the store's own, once it is known closed.
  int closed = 0;
  {
    unique_fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
    closed = ntohs(a.sin_port);
  }
  auto* d = c->node("http://127.0.0.1:" + std::to_string(closed) + "/sbx-cache/site-1");
  auto r = Client(d->socket()).run(with_mypkg());
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "1.0 42\n");
  CHECK(r->layer.cache == "built");
  CHECK(metric(*d, kError) == 1);
  // Its upload fails too, counted and logged, and the daemon carries on.
  for (int i = 0; i < 300 && metric(*d, "sandboxd_cache_uploads_total{kind=\"layer\",result=\"failed\"}") < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(metric(*d, "sandboxd_cache_uploads_total{kind=\"layer\",result=\"failed\"}") == 1);
  CHECK(d->running());
}

namespace {

const std::string kSnapFetched = "sandboxd_cache_fetches_total{kind=\"snapshot\",result=\"hit\"}";
const std::string kSnapCorrupt = "sandboxd_cache_fetches_total{kind=\"snapshot\",result=\"corrupt\"}";
const std::string kSnapUploaded = "sandboxd_cache_uploads_total{kind=\"snapshot\",result=\"ok\"}";

// Bounded waits: templates are saved and uploaded in the background.
template <typename F>
bool eventually(F f, int seconds = 120) {
  for (int i = 0; i < seconds * 10; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

size_t snapshot_count(const TestDaemon& d) {
  auto l = Client(d.socket()).snapshots();
  return l ? l->size() : 0;
}

const std::vector<std::string> kSnapshotsOn = {"--snapshots", "on"};
std::string snapshot_key;

}  // namespace

TEST_CASE("shared caches: a snapshot template one node saved is fetched by another, which restores without saving") {
  auto* c = cluster();
  if (!c) return;
  auto* a = c->node({}, kSnapshotsOn);
  auto code = make_request(Language::python, "print(6 * 7)");
  auto first = Client(a->socket()).run(code);
  REQUIRE_MESSAGE(first.ok(), first.error().describe());
  CHECK(first->vm_start == "boot");
  REQUIRE(eventually([&] { return metric(*a, kSnapUploaded) == 1; }));
  auto on_a = Client(a->socket()).snapshots().value();
  REQUIRE(on_a.size() == 1);
  snapshot_key = on_a[0].key;
  auto object = [&](const std::string& suffix) { return c->store.object("snapshots/" + snapshot_key + suffix); };
  REQUIRE(fs::exists(object(".snapshot")));
  // The RAM file is mostly zeros: it goes compressed.
  REQUIRE(fs::exists(object(".ram.zst")));
  auto state_object = fs::exists(object(".state.zst")) ? object(".state.zst") : object(".state");
  MESSAGE("template of " << on_a[0].memory_mb << " MB RAM (" << (on_a[0].bytes >> 20) << " MB on disk): stored "
                         << fs::file_size(object(".ram.zst")) << " bytes of RAM, " << fs::file_size(state_object)
                         << " bytes of device state");
  CHECK(fs::file_size(object(".ram.zst")) < (uint64_t{on_a[0].memory_mb} << 20) / 4);

  auto* b = c->node({}, kSnapshotsOn);
  Client cb(b->socket());
  auto booted = cb.run(code);
  REQUIRE_MESSAGE(booted.ok(), booted.error().describe());
  CHECK(booted->vm_start == "boot");
  auto since = std::chrono::steady_clock::now();
  REQUIRE(eventually([&] { return snapshot_count(*b) == 1; }));
  MESSAGE("node B booted in " << booted->timing.boot_ms << " ms; its template was there "
                              << std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - since).count()
                              << " ms after that run answered");
  auto restored = cb.run(code);
  REQUIRE_MESSAGE(restored.ok(), restored.error().describe());
  CHECK(restored->stdout_data == "42\n");
  CHECK(restored->vm_start == "snapshot");
  MESSAGE("node B restored in " << restored->timing.boot_ms << " ms");
  auto log = b->log();
  auto fetched_at = log.find("snapshot fetched from the shared store");
  REQUIRE(fetched_at != std::string::npos);
  MESSAGE(log.substr(fetched_at, log.find('\n', fetched_at) - fetched_at));
  CHECK(metric(*b, kSnapFetched) == 1);
  CHECK(cb.snapshots().value().at(0).key == snapshot_key);
  // B saved no template of its own, so it uploaded none.
  CHECK(log.find("snapshot ready") == std::string::npos);
  CHECK(metric(*b, kSnapUploaded) == 0);
  CHECK(c->store.requests(" 403") == 0);
}

TEST_CASE("shared caches: a snapshot whose object does not match its SHA-256 is refused; the node saves its own") {
  auto* c = cluster();
  if (!c || snapshot_key.empty()) return;
  // A well-formed frame of other memory, its size in the description: only
  // the hash can tell.
  auto ram_object = c->store.object("snapshots/" + snapshot_key + ".ram.zst");
  auto desc_object = c->store.object("snapshots/" + snapshot_key + ".snapshot");
  std::string text = slurp(desc_object);
  auto line = text.find("file ram ");
  REQUIRE(line != std::string::npos);
  std::istringstream fields(text.substr(line + 9, text.find('\n', line) - line - 9));
  uint64_t bytes = 0;
  std::string sha, encoding, stored;
  fields >> bytes >> sha >> encoding >> stored;
  REQUIRE(encoding == "zstd");
  std::string other(bytes, '\0');
  other[bytes / 2] = 1;
  std::string packed(ZSTD_compressBound(other.size()), '\0');
  packed.resize(ZSTD_compress(packed.data(), packed.size(), other.data(), other.size(), 1));
  std::ofstream(ram_object, std::ios::binary | std::ios::trunc) << packed;
  text.replace(text.find(" zstd " + stored + "\n", line), 7 + stored.size(), " zstd " + std::to_string(packed.size()) + "\n");
  std::ofstream(desc_object, std::ios::trunc) << text;

  auto* n = c->node({}, kSnapshotsOn);
  auto code = make_request(Language::python, "print(6 * 7)");
  auto r = Client(n->socket()).run(code);
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->vm_start == "boot");
  REQUIRE(eventually([&] { return n->log().find("snapshot ready") != std::string::npos; }));
  CHECK(metric(*n, kSnapCorrupt) == 1);
  CHECK(metric(*n, kSnapFetched) == 0);
  CHECK(n->log().find("SHA-256") != std::string::npos);
  // Nothing of the refused fetch is left, and the node's own template restores.
  for (const auto& e : fs::directory_iterator(c->state_of[n] + "/snapshots"))
    CHECK_FALSE(e.path().filename().string().starts_with(".tmp-fetch"));
  auto again = Client(n->socket()).run(code);
  REQUIRE(again.ok());
  CHECK(again->vm_start == "snapshot");
  // Its good template replaced the bad object.
  REQUIRE(eventually([&] { return metric(*n, kSnapUploaded) == 1; }));
}

}  // TEST_SUITE
