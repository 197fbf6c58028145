// The package layer cache (daemon/layers.h) with a fake builder: keys,
// atomic publish, verification on attach, one build per key, eviction that
// spares layers in use, recovery after a crash, and failed builds that
// leave nothing behind.
#include <doctest/doctest.h>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "daemon/layers.h"
#include "temp_dir.h"
#include "test_loop.h"

using namespace sandbox;
using namespace sandbox::daemon;
using sandbox::test::Loop;
using sandbox::test::TempDir;
namespace fs = std::filesystem;

namespace {

LayerKeyInputs inputs(std::vector<std::string> packages, Language l = Language::python) {
  LayerKeyInputs in;
  in.language = l;
  in.packages = std::move(packages);
  in.base_image = std::string(64, 'a');
  in.interpreter = "python3.11=3.11.2-6";
  in.installer = "python3-pip=23.0.1";
  in.index_url = "http://127.0.0.1:1/simple";
  return in;
}

// A builder that writes `bytes` bytes and answers later, when the test
// says so (as a VM would, from a later loop turn).
struct FakeBuilder {
  size_t bytes = 1000;
  int builds = 0;
  std::vector<std::function<void()>> pending;
  std::optional<Error> fail;
  LayerBuildFn fn() {
    return [this](const LayerKeyInputs& in, const std::string& path, std::function<void(Result<std::string>)> done) {
      ++builds;
      pending.push_back([this, in, path, done] {
        if (fail) return done(*fail);
        std::ofstream(path, std::ios::binary) << std::string(bytes, 'L') << in.packages.size();
        std::string lock;
        for (const auto& p : in.packages) lock += p + " sha256:00\n";
        lock += "dep==0.1 sha256:11\n";
        done(lock);
      });
    };
  }
  void finish_all() {
    auto p = std::exchange(pending, {});
    for (auto& f : p) f();
  }
};

// One byte of a file changed in place.
void overwrite(const std::string& path, std::streamoff at, char c) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(at);
  f.put(c);
}

// A cache over a directory of its own, its fake builder and its loop.
struct Cache {
  TempDir d;
  std::shared_ptr<LayerStore> store;
  FakeBuilder b;
  Loop loop;  // before the cache: its thread's handle closes on this loop
  LayerCache cache;
  explicit Cache(uint64_t max_bytes = 1 << 20)
      : store(std::make_shared<LayerStore>(d.path, max_bytes)), cache(loop.get(), store, b.fn()) {}
  // The layer for `packages`, built now.
  std::shared_ptr<LayerGrant> build(std::vector<std::string> packages) {
    std::shared_ptr<LayerGrant> grant;
    cache.get(inputs(std::move(packages)), [&](Result<std::shared_ptr<LayerGrant>> g) {
      REQUIRE_MESSAGE(g.ok(), g.error().message);
      grant = g.value();
    });
    b.finish_all();
    REQUIRE(loop.drain());
    REQUIRE(grant);
    return grant;
  }
};

// Room for two layers of about 400 bytes.
struct SmallCache : Cache {
  SmallCache() : Cache(900) { b.bytes = 400; }
};

// No room for even one.
struct TinyCache : Cache {
  TinyCache() : Cache(300) { b.bytes = 400; }
};

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("layer keys cover every input and are path-safe") {
  auto base = inputs({"a==1"});
  auto k = layer_key(base);
  CHECK(valid_layer_key(k));
  CHECK(k.starts_with("py-"));
  CHECK(layer_key(inputs({"a==1"}, Language::javascript)).starts_with("js-"));
  auto differs = [&](auto change) {
    auto in = base;
    change(in);
    return layer_key(in) != k;
  };
  CHECK(differs([](auto& in) { in.packages = {"a==2"}; }));
  CHECK(differs([](auto& in) { in.packages = {"a==1", "b==1"}; }));
  CHECK(differs([](auto& in) { in.base_image = std::string(64, 'b'); }));
  CHECK(differs([](auto& in) { in.interpreter = "python3.12"; }));
  CHECK(differs([](auto& in) { in.installer = "pip 24"; }));
  CHECK(differs([](auto& in) { in.index_url = "http://other/simple"; }));
  CHECK(differs([](auto& in) { in.source_builds = true; }));
  CHECK(differs([](auto& in) { in.apt_sources = "http://deb.example/debian stable main\n"; }));
  CHECK(differs([](auto& in) { in.apt_installer = "apt=2.6.1"; }));
  auto raw = layer_key(inputs({"apt:jq=1.6-2.1"}, Language::raw));
  CHECK(raw.starts_with("sh-"));
  CHECK(valid_layer_key(raw));
  // Field boundaries are part of the key: ["ab"] is not ["a", "b"].
  CHECK(layer_key(inputs({"ab"})) != layer_key(inputs({"a", "b"})));
  CHECK_FALSE(valid_layer_key("../../etc/passwd"));
  CHECK_FALSE(valid_layer_key("py-XYZ"));
}

TEST_CASE("the builder's lock is bounded and printable") {
  CHECK(parse_lock("b==1\na==2\n\n").value() == std::vector<std::string>{"a==2", "b==1"});
  CHECK_FALSE(parse_lock("a\x1b[2J==1\n").ok());
  CHECK_FALSE(parse_lock(std::string(300, 'x')).ok());
  std::string many;
  for (int i = 0; i < 1001; ++i) many += "p" + std::to_string(i) + "==1\n";
  CHECK(parse_lock(many).error().code == ErrorCode::package_install_failed);
}

TEST_CASE_FIXTURE(Cache, "first request builds, a second hits, two at once join one build") {
  store->recover();

  std::vector<std::string> seen;
  std::vector<std::shared_ptr<LayerGrant>> grants;
  auto collect = [&](Result<std::shared_ptr<LayerGrant>> g) {
    REQUIRE_MESSAGE(g.ok(), g.error().message);
    seen.push_back(g.value()->use().cache);
    grants.push_back(g.value());
  };
  cache.get(inputs({"a==1"}), collect);
  cache.get(inputs({"a==1"}), collect);
  CHECK(b.builds == 1);
  auto listed = cache.list("", false).value();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].building);
  CHECK(listed[0].users == 2);
  b.finish_all();
  REQUIRE(loop.drain());
  CHECK(seen == std::vector<std::string>{"built", "joined"});
  CHECK(grants[0]->path() == grants[1]->path());
  CHECK(grants[0]->use().key == layer_key(inputs({"a==1"})));

  cache.get(inputs({"a==1"}), collect);
  CHECK(seen.size() == 2);  // a hit too is answered once its hash is checked
  REQUIRE(loop.drain());
  CHECK(b.builds == 1);
  CHECK(seen.back() == "hit");
  CHECK(grants.back()->use().build_ms == 0);

  listed = cache.list("", false).value();
  REQUIRE(listed.size() == 1);
  CHECK_FALSE(listed[0].building);
  CHECK(listed[0].users == 3);
  CHECK(listed[0].packages == std::vector<std::string>{"a==1"});
  CHECK(listed[0].lock == std::vector<std::string>{"a==1 sha256:00", "dep==0.1 sha256:11"});
  grants.clear();
  CHECK(cache.list("", false).value()[0].users == 0);
  // Published atomically: an image and its description, no temp files.
  auto key = layer_key(inputs({"a==1"}));
  CHECK(dir_entries(d.path) == std::vector<std::string>{key + ".erofs", key + ".layer"});
}

TEST_CASE_FIXTURE(Cache, "a failed build leaves no layer and no temp file, and the next request retries") {
  b.fail = Error::make(ErrorCode::package_install_failed, "ERROR: No matching distribution found for nope==1");
  int failures = 0;
  for (int i = 0; i < 2; ++i)
    cache.get(inputs({"nope==1"}), [&](Result<std::shared_ptr<LayerGrant>> g) {
      REQUIRE_FALSE(g.ok());
      CHECK(g.error().code == ErrorCode::package_install_failed);
      CHECK(g.error().message.find("No matching distribution") != std::string::npos);
      ++failures;
    });
  // A build that wrote part of its image before failing.
  std::ofstream(store->temp_path(layer_key(inputs({"nope==1"})))) << "partial";
  b.finish_all();
  REQUIRE(loop.drain());
  CHECK(failures == 2);
  CHECK(dir_entries(d.path).empty());
  CHECK(cache.list("", false).value().empty());
  b.fail.reset();
  bool built = false;
  cache.get(inputs({"nope==1"}), [&](auto g) { built = g.ok() && g.value()->use().cache == "built"; });
  CHECK(b.builds == 2);
  b.finish_all();
  REQUIRE(loop.drain());
  CHECK(built);
}

TEST_CASE_FIXTURE(Cache, "a corrupted layer is found on attach and rebuilt; at start-up it is removed") {
  build({"a==1"});
  auto key = layer_key(inputs({"a==1"}));
  // One byte changes in the image.
  overwrite(d.path + "/" + key + ".erofs", 10, 'X');
  std::string how;
  cache.get(inputs({"a==1"}), [&](auto g) {
    REQUIRE(g.ok());
    how = g.value()->use().cache;
  });
  REQUIRE(loop.drain());
  CHECK(b.builds == 2);  // not served: rebuilt
  b.finish_all();
  REQUIRE(loop.drain());
  CHECK(how == "built");

  // Corrupt again, then restart: recovery removes it before anyone asks.
  overwrite(d.path + "/" + key + ".erofs", 3, 'Y');
  std::ofstream(d.path + "/junk.erofs.tmp") << "left by a crash";
  std::ofstream(d.path + "/orphan.erofs") << "no description";
  auto fresh = std::make_shared<LayerStore>(d.path, 1 << 20);
  auto removed = fresh->recover();
  CHECK(removed.size() == 3);
  CHECK(fresh->list().empty());
  CHECK(dir_entries(d.path).empty());
}

TEST_CASE("a layer survives a restart with its lock and last use") {
  TempDir d;
  {
    auto store = std::make_shared<LayerStore>(d.path, 1 << 20);
    FakeBuilder b;
    Loop loop;
    LayerCache cache(loop.get(), store, b.fn());
    cache.get(inputs({"a==1"}), [](auto g) { REQUIRE(g.ok()); });
    b.finish_all();
    REQUIRE(loop.drain());
  }
  auto store = std::make_shared<LayerStore>(d.path, 1 << 20);
  CHECK(store->recover().empty());
  auto list = store->list();
  REQUIRE(list.size() == 1);
  CHECK(list[0].lock.size() == 2);
  CHECK(list[0].last_used_unix_ms > 0);
  FakeBuilder b;
  Loop loop;
  LayerCache cache(loop.get(), store, b.fn());
  std::string how;
  cache.get(inputs({"a==1"}), [&](auto g) { how = g.ok() ? g.value()->use().cache : g.error().message; });
  REQUIRE(loop.drain());
  CHECK(how == "hit");
  CHECK(b.builds == 0);
}

TEST_CASE_FIXTURE(SmallCache, "eviction goes by last use and never removes a layer in use") {
  auto held = build({"held==1"});
  build({"b==1"});
  build({"c==1"});
  // "held" is the oldest but in use: "b" went instead.
  auto keys = [&] {
    std::vector<std::string> out;
    for (const auto& l : store->list()) out.push_back(l.packages.at(0));
    std::sort(out.begin(), out.end());
    return out;
  };
  CHECK(keys() == std::vector<std::string>{"c==1", "held==1"});
  CHECK(fs::exists(held->path()));
  // Released, it is the least recently used the next time room is needed.
  held.reset();
  build({"d==1"});
  CHECK(keys() == std::vector<std::string>{"c==1", "d==1"});
}

TEST_CASE_FIXTURE(Cache, "drop: one key, or every layer not in use; never one in use") {
  std::shared_ptr<LayerGrant> held;
  cache.get(inputs({"a==1"}), [&](auto g) { held = g.value(); });
  cache.get(inputs({"b==1"}), [](auto) {});
  cache.get(inputs({"c==1"}), [](auto) {});
  b.finish_all();
  REQUIRE(loop.drain());
  auto held_key = layer_key(inputs({"a==1"}));
  auto r = cache.list(held_key, false);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::capacity);
  CHECK(cache.list("../../etc", false).error().code == ErrorCode::invalid_argument);
  CHECK(cache.list("py-" + std::string(40, '0'), false).error().code == ErrorCode::not_found);
  CHECK(cache.list(layer_key(inputs({"b==1"})), false).value().size() == 2);
  auto left = cache.list("", true).value();
  REQUIRE(left.size() == 1);
  CHECK(left[0].key == held_key);
}

TEST_CASE_FIXTURE(Cache, "stats: each answer counted once by how it came, builds by result, the cache's size now") {
  auto requests = [&](LayerRequest r) { return cache.stats().requests[static_cast<size_t>(r)]; };
  std::vector<std::shared_ptr<LayerGrant>> grants;
  auto keep = [&](Result<std::shared_ptr<LayerGrant>> g) {
    if (g) grants.push_back(*g);
  };
  CHECK(cache.stats().building == 0);

  // Three ask at once: one build, the first "built", the others "joined".
  for (int i = 0; i < 3; ++i) cache.get(inputs({"a==1"}), keep);
  CHECK(cache.stats().building == 1);
  CHECK(requests(LayerRequest::built) == 0);  // counted when answered
  b.finish_all();
  REQUIRE(loop.drain());
  cache.get(inputs({"a==1"}), keep);
  REQUIRE(loop.drain());
  auto s = cache.stats();
  CHECK(s.requests[static_cast<size_t>(LayerRequest::built)] == 1);
  CHECK(s.requests[static_cast<size_t>(LayerRequest::joined)] == 2);
  CHECK(s.requests[static_cast<size_t>(LayerRequest::hit)] == 1);
  CHECK(s.requests[static_cast<size_t>(LayerRequest::failed)] == 0);
  CHECK(s.builds[0] == 1);
  CHECK(s.builds[1] == 0);
  CHECK(s.build_time[0].count() == 1);
  CHECK(s.building == 0);
  CHECK(s.layers == 1);
  CHECK(s.cache_bytes == store->bytes());
  CHECK(s.cache_bytes > 1000);

  // A failed build fails every waiter: each request counted as failed.
  b.fail = Error::make(ErrorCode::package_install_failed, "no such package");
  cache.get(inputs({"nope==1"}), keep);
  cache.get(inputs({"nope==1"}), keep);
  b.finish_all();
  REQUIRE(loop.drain());
  s = cache.stats();
  CHECK(s.requests[static_cast<size_t>(LayerRequest::failed)] == 2);
  CHECK(s.requests[static_cast<size_t>(LayerRequest::built)] == 1);
  CHECK(s.requests[static_cast<size_t>(LayerRequest::joined)] == 2);
  CHECK(s.builds[1] == 1);
  CHECK(s.build_time[1].count() == 1);
  CHECK(s.layers == 1);

  // A corrupt layer on attach: rebuilt, and the request that found it
  // counted once, as "built", not as a hit.
  b.fail.reset();
  grants.clear();
  overwrite(d.path + "/" + layer_key(inputs({"a==1"})) + ".erofs", 10, 'X');
  cache.get(inputs({"a==1"}), keep);
  REQUIRE(loop.drain());  // the check finds it corrupt and starts a build
  b.finish_all();
  REQUIRE(loop.drain());
  s = cache.stats();
  CHECK(s.requests[static_cast<size_t>(LayerRequest::hit)] == 1);
  CHECK(s.requests[static_cast<size_t>(LayerRequest::built)] == 2);
  CHECK(s.builds[0] == 2);
  uint64_t total = 0;
  for (auto n : s.requests) total += n;
  CHECK(total == 7);  // every get answered once
}

TEST_CASE_FIXTURE(Cache, "a hit is checked off the loop: later requests join the check, and the layer is held while it runs") {
  build({"a==1"});
  auto key = layer_key(inputs({"a==1"}));

  std::vector<std::shared_ptr<LayerGrant>> grants;
  std::vector<std::string> seen;
  for (int i = 0; i < 2; ++i)
    cache.get(inputs({"a==1"}), [&](Result<std::shared_ptr<LayerGrant>> g) {
      REQUIRE(g.ok());
      seen.push_back(g.value()->use().cache);
      grants.push_back(g.value());
    });
  CHECK(seen.empty());  // not on the caller's turn: the hash is taken off the loop
  // One check for both, holding the layer: neither dropped nor evicted meanwhile.
  REQUIRE(store->list().size() == 1);
  CHECK(store->list()[0].users == 1);
  CHECK(cache.list(key, false).error().code == ErrorCode::capacity);
  CHECK(cache.list("", true).value().size() == 1);
  REQUIRE(loop.drain());
  CHECK(seen == std::vector<std::string>{"hit", "hit"});
  CHECK(store->list()[0].users == 2);  // the check's hold is gone, the grants' remain
  // Each grant has the checked image open on a descriptor of its own.
  struct stat image {}, a {}, b2 {};
  REQUIRE(::stat(grants[0]->path().c_str(), &image) == 0);
  REQUIRE(::fstat(grants[0]->fd(), &a) == 0);
  REQUIRE(::fstat(grants[1]->fd(), &b2) == 0);
  CHECK(a.st_ino == image.st_ino);
  CHECK(b2.st_ino == image.st_ino);
  CHECK(grants[0]->fd() != grants[1]->fd());
  grants.clear();
  CHECK(store->list()[0].users == 0);
  CHECK(b.builds == 1);
}

TEST_CASE_FIXTURE(Cache, "a layer found corrupt while in use is rebuilt; its old users' releases do not count against the new one") {
  auto old_user = build({"a==1"});
  std::shared_ptr<LayerGrant> new_user;
  auto key = layer_key(inputs({"a==1"}));
  overwrite(d.path + "/" + key + ".erofs", 10, 'X');
  cache.get(inputs({"a==1"}), [&](auto g) { new_user = g.value(); });
  REQUIRE(loop.drain());
  CHECK(b.builds == 2);
  b.finish_all();
  REQUIRE(loop.drain());
  REQUIRE(new_user);
  CHECK(new_user->use().cache == "built");
  CHECK(store->list().at(0).users == 1);
  old_user.reset();
  CHECK(store->list().at(0).users == 1);
  CHECK(cache.list(key, false).error().code == ErrorCode::capacity);
  new_user.reset();
  CHECK(store->list().at(0).users == 0);
}

TEST_CASE_FIXTURE(TinyCache, "a new layer over the cache's limit is granted, then goes when its last user leaves") {
  auto grant = build({"big==1"});
  auto key = layer_key(inputs({"big==1"}));
  auto recorded = store->sha256(key);
  REQUIRE(recorded.size() == 64);  // published, not evicted before its user held it
  CHECK(grant->identity() == key + ":" + recorded);
  CHECK(store->list().at(0).users == 1);
  grant.reset();
  CHECK(store->list().empty());
  CHECK(dir_entries(d.path).empty());
}

TEST_CASE_FIXTURE(Cache, "a cached layer whose image is gone is built again") {
  build({"a==1"});
  auto key = layer_key(inputs({"a==1"}));
  fs::remove(d.path + "/" + key + ".erofs");
  std::string how;
  cache.get(inputs({"a==1"}), [&](auto g) { how = g.ok() ? g.value()->use().cache : g.error().message; });
  CHECK(b.builds == 2);
  b.finish_all();
  REQUIRE(loop.drain());
  CHECK(how == "built");
  CHECK(fs::exists(d.path + "/" + key + ".erofs"));
}

TEST_CASE("a cache destroyed with a check in flight gives the layer's hold back") {
  TempDir d;
  auto store = std::make_shared<LayerStore>(d.path, 1 << 20);
  FakeBuilder b;
  Loop loop;
  auto cache = std::make_unique<LayerCache>(loop.get(), store, b.fn());
  cache->get(inputs({"a==1"}), [](auto g) { REQUIRE(g.ok()); });
  b.finish_all();
  REQUIRE(loop.drain());
  bool answered = false;
  cache->get(inputs({"a==1"}), [&](auto) { answered = true; });
  CHECK(store->list().at(0).users == 1);
  cache.reset();
  loop.settle();
  CHECK_FALSE(answered);
  CHECK(store->list().at(0).users == 0);
}
