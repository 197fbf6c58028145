// The shared caches (SPEC F27) without a daemon: request signing against
// AWS's published examples, the operator's URL and credentials, layer
// descriptions from an untrusted store, the object store client against a
// canned HTTP server on loopback (bounds, errors, deadlines), and the
// layer cache's fetch-before-build and upload-after-build with a fake store;
// snapshot template descriptions, their compression, and a template's trip
// up to and back from a store kept in memory.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "common/unique_fd.h"
#include "daemon/config.h"
#include "daemon/digest.h"
#include "daemon/layers.h"
#include "daemon/object_store.h"
#include "daemon/offload.h"
#include "daemon/sigv4.h"
#include "daemon/snapshot_description.h"
#include "daemon/snapshot_share.h"
#include "temp_dir.h"
#include "test_loop.h"

using namespace sandbox;
using namespace sandbox::daemon;
using sandbox::test::Loop;
using sandbox::test::TempDir;
namespace fs = std::filesystem;

namespace {

const SigV4Credentials kAwsExample{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"};

}  // namespace

TEST_CASE("SigV4: the S3 documentation's GET and PUT examples sign to their published signatures") {
  // "Signature Calculations for the Authorization Header", Amazon S3 API
  // reference: GET Object with a range, PUT Object with a storage class.
  SigV4Request get{"GET", "/test.txt", "",
                   {{"Host", "examplebucket.s3.amazonaws.com"},
                    {"Range", "bytes=0-9"},
                    {"x-amz-content-sha256", sha256_hex("")},
                    {"x-amz-date", "20130524T000000Z"}},
                   sha256_hex(""), "20130524T000000Z", "us-east-1", "s3"};
  CHECK(sigv4_authorization(get, kAwsExample) ==
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  auto body = sha256_hex("Welcome to Amazon S3.");
  SigV4Request put{"PUT", uri_encode_path("/test$file.text"), "",
                   {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                    {"Host", "examplebucket.s3.amazonaws.com"},
                    {"x-amz-date", "20130524T000000Z"},
                    {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                    {"x-amz-content-sha256", body}},
                   body, "20130524T000000Z", "us-east-1", "s3"};
  CHECK(put.path == "/test%24file.text");
  CHECK(sigv4_authorization(put, kAwsExample).ends_with(
      "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"));
  CHECK(amz_date(1369353600) == "20130524T000000Z");
}

TEST_CASE("store URLs: path-style, a bucket as S3 names them, a safe prefix") {
  auto u = parse_store_url("http://127.0.0.1:9000/layers-bucket/site/a");
  REQUIRE(u.ok());
  CHECK_FALSE(u->https);
  CHECK(u->authority == "127.0.0.1:9000");
  CHECK(u->base == "/layers-bucket/site/a");
  CHECK(parse_store_url("https://s3.example.com/bucket/").value().base == "/bucket");
  for (auto bad : {"ftp://h/bucket", "http://h", "http://h/", "http://h/b", "http://h/Bucket", "http://h:0/bucket",
                   "http://h:99999/bucket", "http://h/bucket/../x", "http://h/bucket//x", "http://h/bucket/a b",
                   "http://user@h/bucket", "http://h/bucket/x?y", "http:///bucket"})
    CHECK_MESSAGE(!parse_store_url(bad).ok(), bad);
}

TEST_CASE("store credentials: an AWS credentials file, both keys required") {
  auto c = parse_store_credentials("# node keys\n[default]\naws_access_key_id = AKID\naws_secret_access_key=s/e+c\n");
  REQUIRE(c.ok());
  CHECK(c->access_key_id == "AKID");
  CHECK(c->secret_access_key == "s/e+c");
  CHECK_FALSE(parse_store_credentials("aws_access_key_id = AKID\n").ok());
  CHECK_FALSE(parse_store_credentials("aws_access_key_id = A/B\naws_secret_access_key = s\n").ok());
  CHECK_FALSE(parse_store_credentials("aws_access_key_id = A\naws_secret_access_key = s s\n").ok());
  CHECK_FALSE(parse_store_credentials("just words\n").ok());
}

TEST_CASE("config: cache_store keys are checked and bounded") {
  Config c;
  CHECK(c.cache_store_url.empty());
  CHECK(c.cache_store_upload);
  REQUIRE(config_set(c, "cache_store_url", "http://127.0.0.1:9000/bucket/p", "t").ok());
  CHECK(c.cache_store_url == "http://127.0.0.1:9000/bucket/p");
  CHECK(config_set(c, "cache_store_url", "", "t").ok());  // off again
  auto err = config_set(c, "cache_store_url", "http://h/UPPER", "t");
  REQUIRE_FALSE(err.ok());
  CHECK(err.error().message.find("cache_store_url") != std::string::npos);
  CHECK(config_set(c, "cache_store_region", "eu-west-1", "t").ok());
  CHECK_FALSE(config_set(c, "cache_store_region", "eu west", "t").ok());
  CHECK_FALSE(config_set(c, "cache_store_credentials", "relative/path", "t").ok());
  CHECK(config_set(c, "cache_store_upload", "off", "t").ok());
  CHECK_FALSE(c.cache_store_upload);
  CHECK_FALSE(config_set(c, "cache_store_timeout_ms", "10", "t").ok());
  CHECK_FALSE(config_set(c, "cache_store_max_mb", "0", "t").ok());
  CHECK(config_set(c, "cache_store_max_mb", "64", "t").ok());
}

TEST_CASE("layer descriptions from a store are parsed strictly and bounded") {
  LayerDescription d;
  d.info.language = Language::python;
  d.info.packages = {"mypkg==1.0"};
  d.info.lock = {"mypkg==1.0 sha256:aa", "sbxdep==2.0 sha256:bb"};
  d.info.bytes = 4096;
  d.sha256 = std::string(64, 'c');
  auto text = format_layer_description(d);
  auto back = parse_layer_description("py-k", text);
  REQUIRE(back.ok());
  CHECK(back->info.key == "py-k");
  CHECK(back->info.packages == d.info.packages);
  CHECK(back->info.lock == d.info.lock);
  CHECK(back->info.bytes == 4096);
  CHECK(back->sha256 == d.sha256);
  auto refused = [&](std::string t) {
    auto r = parse_layer_description("py-k", t);
    return !r.ok() && r.error().code == ErrorCode::image_corrupt;
  };
  CHECK(refused(""));
  CHECK(refused("sandboxd-layer 2\n"));
  CHECK(refused(text.substr(0, text.size() - 1)));  // cut short
  CHECK(refused(text + "lock a\x1b[2J\n"));
  CHECK(refused(text + "owner root\n"));
  CHECK(refused(text + "package " + std::string(300, 'x') + "\n"));
  CHECK(refused("sandboxd-layer 1\nsha256 " + std::string(64, 'C') + "\nlanguage python\nbytes 1\n"));
  CHECK(refused("sandboxd-layer 1\nsha256 " + std::string(64, 'c') + "\nlanguage python\nbytes 1x\n"));
  CHECK(refused("sandboxd-layer 1\nsha256 " + std::string(64, 'c') + "\nlanguage python\n"));  // no size
  std::string many = text;
  for (int i = 0; i < 2000; ++i) many += "lock p" + std::to_string(i) + "==1\n";
  CHECK(refused(many));
  CHECK(refused(text + std::string(kMaxLayerDescriptionBytes, '\n')));
}

namespace {

// One canned answer per connection, on loopback; records the requests.
struct CannedServer {
  unique_fd listener;
  int port = 0;
  std::function<std::string(const std::string& request)> answer;
  std::vector<std::string> requests;
  std::thread thread;
  std::atomic<bool> done{false};

  explicit CannedServer(std::function<std::string(const std::string&)> a) : answer(std::move(a)) {
    listener = unique_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
    REQUIRE(::listen(listener.get(), 8) == 0);
    thread = std::thread([this] {
      while (!done) {
        unique_fd c(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!c || done) return;
        std::string req;
        char buf[65536];
        size_t need = std::string::npos;
        while (req.size() < need) {
          ssize_t n = ::read(c.get(), buf, sizeof buf);
          if (n <= 0) break;
          req.append(buf, static_cast<size_t>(n));
          auto end = req.find("\r\n\r\n");
          if (end != std::string::npos && need == std::string::npos) {
            auto cl = req.find("Content-Length: ");
            need = end + 4 + (cl != std::string::npos && cl < end ? std::stoul(req.substr(cl + 16)) : 0);
          }
        }
        requests.push_back(req);
        auto out = answer(req);
        if (out == "HANG") {
          while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(20));
          return;
        }
        (void)!::write(c.get(), out.data(), out.size());
      }
    });
  }
  ~CannedServer() {
    done = true;
    ::shutdown(listener.get(), SHUT_RDWR);
    thread.join();
  }
  ObjectStore store(uint32_t timeout_ms = 5000, SigV4Credentials creds = {}) const {
    ObjectStoreOptions o;
    o.url = parse_store_url("http://127.0.0.1:" + std::to_string(port) + "/bucket/node").value();
    o.credentials = std::move(creds);
    o.timeout_ms = timeout_ms;
    return ObjectStore(o);
  }
};

std::string http(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

TEST_CASE("object store client: GET and PUT path-style, signed; 404, oversize and a silent store are errors") {
  std::atomic<bool> stop{false};
  CannedServer ok([](const std::string& r) { return r.starts_with("PUT") ? http(200, "") : http(200, "hello"); });
  auto signed_store = ok.store(5000, kAwsExample);
  auto got = signed_store.get("layers/a.layer", 100, stop);
  REQUIRE_MESSAGE(got.ok(), got.error().message);
  CHECK(*got == "hello");
  const auto& req = ok.requests.at(0);
  CHECK(req.starts_with("GET /bucket/node/layers/a.layer HTTP/1.1\r\n"));
  CHECK(req.find("Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/") != std::string::npos);
  CHECK(req.find("x-amz-content-sha256: " + sha256_hex("")) != std::string::npos);
  REQUIRE(signed_store.put("layers/a.layer", "body", stop).ok());
  CHECK(ok.requests.at(1).find("x-amz-content-sha256: " + sha256_hex("body")) != std::string::npos);
  CHECK(ok.requests.at(1).ends_with("\r\n\r\nbody"));
  // Unsigned without credentials.
  REQUIRE(ok.store().get("x", 100, stop).ok());
  CHECK(ok.requests.at(2).find("Authorization") == std::string::npos);

  // A bound smaller than the object: refused, whether or not the length is announced.
  auto over = ok.store().get("x", 3, stop);
  REQUIRE_FALSE(over.ok());
  CHECK(over.error().code == ErrorCode::capacity);
  CannedServer unannounced([](const std::string&) {
    return "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + std::string(100'000, 'z');
  });
  char tmpl[] = "/tmp/sandboxd-store-XXXXXX";
  unique_fd f(::mkstemp(tmpl));
  auto to_file = unannounced.store().get_to_fd("x", f.get(), 1000, stop);
  ::unlink(tmpl);
  REQUIRE_FALSE(to_file.ok());
  CHECK(to_file.error().code == ErrorCode::capacity);

  CannedServer missing([](const std::string&) { return http(404, "<Error><Code>NoSuchKey</Code></Error>"); });
  auto nf = missing.store().get("x", 100, stop);
  REQUIRE_FALSE(nf.ok());
  CHECK(nf.error().code == ErrorCode::not_found);
  CannedServer denied([](const std::string&) { return http(403, "<Error><Code>SignatureDoesNotMatch</Code></Error>"); });
  auto den = denied.store().put("x", "y", stop);
  REQUIRE_FALSE(den.ok());
  CHECK(den.error().code == ErrorCode::communication);
  CHECK(den.error().message.find("403 SignatureDoesNotMatch") != std::string::npos);

  // A store that accepts and never answers: the deadline ends the transfer.
  CannedServer silent([](const std::string&) { return std::string("HANG"); });
  auto late = silent.store(300).get("x", 100, stop);
  REQUIRE_FALSE(late.ok());
  CHECK(late.error().code == ErrorCode::timeout);
  // Nobody listening.
  int port = 0;
  { CannedServer gone([](const std::string&) { return std::string(); }); port = gone.port; }
  ObjectStoreOptions o;
  o.url = parse_store_url("http://127.0.0.1:" + std::to_string(port) + "/bucket").value();
  auto refused = ObjectStore(o).get("x", 100, stop);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::communication);
}

TEST_CASE("object store client: a stop request ends a transfer in flight") {
  std::atomic<bool> stop{false};
  CannedServer silent([](const std::string&) { return std::string("HANG"); });
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop = true;
  });
  auto r = silent.store(600'000).get("x", 100, stop);
  stopper.join();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("stopped") != std::string::npos);
}

namespace {

LayerKeyInputs inputs(std::vector<std::string> packages) {
  LayerKeyInputs in;
  in.packages = std::move(packages);
  in.base_image = std::string(64, 'a');
  return in;
}

// A store in memory: descriptions and images by key; answers when told.
struct FakeRemote : LayerRemote {
  struct Shared {
    std::map<std::string, std::pair<std::string, std::string>> objects;  // key -> (description, image)
    std::optional<Error> fail;
    int fetches = 0, uploads = 0;
    std::vector<std::function<void()>> pending;
  };
  std::shared_ptr<Shared> s;
  explicit FakeRemote(std::shared_ptr<Shared> shared) : s(std::move(shared)) {}
  void fetch(const std::string& key, const std::string& path, std::function<void(Result<LayerDescription>)> done) override {
    ++s->fetches;
    s->pending.push_back([s = s, key, path, done] {
      if (s->fail) return done(*s->fail);
      auto it = s->objects.find(key);
      if (it == s->objects.end()) return done(Error::make(ErrorCode::not_found, "no " + key));
      std::ofstream(path, std::ios::binary) << it->second.second;
      done(parse_layer_description(key, it->second.first));
    });
  }
  void upload(LayerDescription d, unique_fd image, std::function<void(Result<uint64_t>)> done) override {
    ++s->uploads;
    std::string bytes(d.info.bytes, '\0');
    CHECK(::pread(image.get(), bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
    s->objects[d.info.key] = {format_layer_description(d), bytes};
    done(d.info.bytes);
  }
  static void run(Shared& s) {
    auto p = std::exchange(s.pending, {});
    for (auto& f : p) f();
  }
};

struct Node {
  TempDir dir;
  std::shared_ptr<LayerStore> store = std::make_shared<LayerStore>(dir.path, 1 << 20);
  int builds = 0;
  Loop loop;
  std::unique_ptr<LayerCache> cache;
  explicit Node(std::shared_ptr<FakeRemote::Shared> remote) {
    cache = std::make_unique<LayerCache>(
        loop.get(), store,
        [this](const LayerKeyInputs& in, const std::string& path, std::function<void(Result<std::string>)> done) {
          ++builds;
          std::ofstream(path, std::ios::binary) << "image of " << in.packages.size() << std::string(500, 'L');
          done(in.packages.at(0) + " sha256:00\n");
        },
        std::make_unique<FakeRemote>(std::move(remote)));
  }
  std::string get(const LayerKeyInputs& in, std::shared_ptr<FakeRemote::Shared> remote) {
    std::string how;
    cache->get(in, [&](Result<std::shared_ptr<LayerGrant>> g) { how = g ? g.value()->use().cache : g.error().describe(); });
    // The store's answers, then the hashing thread's, until answered.
    for (int i = 0; i < 10 && how.empty(); ++i) {
      FakeRemote::run(*remote);
      REQUIRE(loop.drain());
    }
    return how;
  }
};

}  // namespace

TEST_CASE("layer cache with a shared store: a node fetches what another built, else builds and uploads") {
  auto remote = std::make_shared<FakeRemote::Shared>();
  auto key = layer_key(inputs({"a==1"}));
  Node a(remote), b(remote);
  CHECK(a.get(inputs({"a==1"}), remote) == "built");  // a miss, then a build, then an upload
  CHECK(a.builds == 1);
  CHECK(remote->uploads == 1);
  CHECK(a.cache->stats().fetches[static_cast<size_t>(CacheFetch::miss)] == 1);
  CHECK(a.cache->stats().uploads[0] == 1);

  // B: two requests at once share one fetch; no build.
  std::vector<std::string> seen;
  for (int i = 0; i < 2; ++i)
    b.cache->get(inputs({"a==1"}), [&](auto g) { seen.push_back(g ? g.value()->use().cache : g.error().message); });
  CHECK(remote->fetches == 2);
  FakeRemote::run(*remote);
  REQUIRE(b.loop.drain());
  CHECK(seen == std::vector<std::string>{"fetched", "joined"});
  CHECK(b.builds == 0);
  auto st = b.cache->stats();
  CHECK(st.fetches[static_cast<size_t>(CacheFetch::hit)] == 1);
  CHECK(st.requests[static_cast<size_t>(LayerRequest::fetched)] == 1);
  CHECK(st.fetch_bytes == a.store->list().at(0).bytes);
  CHECK(b.store->sha256(key) == a.store->sha256(key));
  CHECK(b.store->list().at(0).lock == std::vector<std::string>{"a==1 sha256:00"});
  CHECK(remote->uploads == 1);  // a fetched layer is not put back
  // And it is published like a build: found again after a restart.
  LayerStore reopened(b.dir.path, 1 << 20);
  CHECK(reopened.recover().empty());
  CHECK(reopened.has(key));
}

TEST_CASE("layer cache with a shared store: a corrupt, foreign or unreachable object means a local build") {
  auto remote = std::make_shared<FakeRemote::Shared>();
  auto key = layer_key(inputs({"a==1"}));
  {
    Node a(remote);
    REQUIRE(a.get(inputs({"a==1"}), remote) == "built");
  }
  auto good = remote->objects[key];

  SUBCASE("an image whose hash differs") {
    remote->objects[key].second[3] ^= 1;
    Node b(remote);
    CHECK(b.get(inputs({"a==1"}), remote) == "built");
    CHECK(b.builds == 1);
    CHECK(b.cache->stats().fetches[static_cast<size_t>(CacheFetch::corrupt)] == 1);
    // Its own build went back up, over the bad one.
    CHECK(remote->objects[key].second == good.second);
    CHECK(remote->uploads == 2);
  }
  SUBCASE("a description naming other packages") {
    auto other = parse_layer_description(key, good.first).value();
    other.info.packages = {"evil==6.6.6"};
    remote->objects[key].first = format_layer_description(other);
    Node b(remote);
    CHECK(b.get(inputs({"a==1"}), remote) == "built");
    CHECK(b.cache->stats().fetches[static_cast<size_t>(CacheFetch::corrupt)] == 1);
  }
  SUBCASE("a store that cannot be reached") {
    remote->fail = Error::make(ErrorCode::communication, "connection refused");
    Node b(remote);
    CHECK(b.get(inputs({"a==1"}), remote) == "built");
    CHECK(b.cache->stats().fetches[static_cast<size_t>(CacheFetch::error)] == 1);
  }
  SUBCASE("a layer corrupted here is fetched again rather than built") {
    Node b(remote);
    REQUIRE(b.get(inputs({"a==1"}), remote) == "fetched");
    {
      std::fstream f(b.dir.path + "/" + key + ".erofs", std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(5);
      f.put('X');
    }
    CHECK(b.get(inputs({"a==1"}), remote) == "fetched");
    CHECK(b.builds == 0);
  }
}

TEST_CASE("offload: jobs run off the loop, answers on it; destruction stops a job in flight and drops its answer") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Offload offload(&loop, 2);
    auto loop_thread = std::this_thread::get_id();
    std::thread::id job_thread, answer_thread;
    int answers = 0;
    REQUIRE(offload.post([&](const std::atomic<bool>&) -> std::function<void()> {
      job_thread = std::this_thread::get_id();
      return [&] {
        answer_thread = std::this_thread::get_id();
        ++answers;
      };
    }));
    CHECK(offload.pending() == 1);
    for (int i = 0; i < 500 && answers == 0; ++i) {
      uv_run(&loop, UV_RUN_NOWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(answers == 1);
    CHECK(offload.pending() == 0);
    CHECK(job_thread != loop_thread);
    CHECK(answer_thread == loop_thread);

    // A job that runs until told to stop.
    std::atomic<bool> started{false};
    offload.post([&](const std::atomic<bool>& stop) -> std::function<void()> {
      started = true;
      while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return [&] { ++answers; };
    });
    while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }  // ~Offload: stop, join
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("offload: an idle offload lets its loop end; one with a job out keeps it until the answer has run") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Offload offload(&loop, 1);
    // uv_run answers whether anything still keeps the loop alive.
    CHECK(uv_run(&loop, UV_RUN_NOWAIT) == 0);
    std::atomic<bool> go{false};
    bool answered = false;
    REQUIRE(offload.post([&](const std::atomic<bool>& stop) -> std::function<void()> {
      while (!go && !stop) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return [&] { answered = true; };
    }));
    CHECK(uv_run(&loop, UV_RUN_NOWAIT) != 0);
    go = true;
    // Run to completion: returns once the answer has run and nothing is out.
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(answered);
    CHECK(uv_run(&loop, UV_RUN_NOWAIT) == 0);
  }
  uv_run(&loop, UV_RUN_NOWAIT);  // the handle's close
  CHECK(uv_loop_close(&loop) == 0);
}

namespace {

std::string hex64(char c) { return std::string(64, c); }

SnapshotDescription a_snapshot() {
  SnapshotDescription d;
  d.key = "0123456789abcdef01234567";
  d.fingerprint = hex64('f');
  d.language = Language::javascript;
  d.memory_mb = 256;
  d.layer = "js-0123:" + hex64('e');
  d.state = {123456, hex64('a'), SnapshotEncoding::zstd, 2345};
  d.ram = {uint64_t{256} << 20, hex64('b'), SnapshotEncoding::zstd, 99999};
  return d;
}

// A file of `size` bytes: a hole but for `data` at every `stride`.
unique_fd sparse_file(uint64_t size, uint64_t stride, const std::string& data) {
  unique_fd fd(::memfd_create("test-ram", MFD_CLOEXEC));
  REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
  for (uint64_t at = 0; at + data.size() <= size; at += stride)
    REQUIRE(::pwrite(fd.get(), data.data(), data.size(), static_cast<off_t>(at)) == static_cast<ssize_t>(data.size()));
  return fd;
}


// An S3 of a few objects, in memory: PUT keeps the body, GET gives it back.
struct MemoryS3 {
  std::mutex mu;
  std::map<std::string, std::string> objects;  // by path
  std::vector<std::string> puts;               // in order
  CannedServer server{[this](const std::string& req) {
    auto sp = req.find(' ');
    auto path = req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
    std::lock_guard lock(mu);
    if (req.starts_with("PUT ")) {
      objects[path] = req.substr(req.find("\r\n\r\n") + 4);
      puts.push_back(path);
      return http(200, "");
    }
    auto it = objects.find(path);
    return it == objects.end() ? http(404, "<Error><Code>NoSuchKey</Code></Error>") : http(200, it->second);
  }};
  LayerShareOptions options() const {
    LayerShareOptions o;
    o.store.url = parse_store_url("http://127.0.0.1:" + std::to_string(server.port) + "/bucket/node").value();
    o.store.timeout_ms = 10'000;
    o.max_image_bytes = uint64_t{64} << 20;
    return o;
  }
};

template <typename T>
T run_until(uv_loop_t* loop, std::optional<T>& answer) {
  for (int i = 0; i < 1000 && !answer; ++i) {
    uv_run(loop, UV_RUN_NOWAIT);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(answer.has_value());
  return std::move(*answer);
}

}  // namespace

TEST_CASE("snapshot descriptions from a store are parsed strictly and bounded") {
  auto d = a_snapshot();
  auto text = format_snapshot_description(d);
  auto back = parse_snapshot_description(text);
  REQUIRE_MESSAGE(back.ok(), back.error().message);
  CHECK(back->key == d.key);
  CHECK(back->fingerprint == d.fingerprint);
  CHECK(back->language == Language::javascript);
  CHECK(back->memory_mb == 256);
  CHECK(back->layer == d.layer);
  CHECK(back->state.bytes == 123456);
  CHECK(back->state.stored_bytes == 2345);
  CHECK(back->ram.sha256 == hex64('b'));
  CHECK(back->ram.encoding == SnapshotEncoding::zstd);
  // No layer line without a layer.
  d.layer.clear();
  CHECK(format_snapshot_description(d).find("layer") == std::string::npos);
  CHECK(parse_snapshot_description(format_snapshot_description(d)).ok());

  auto refused = [](std::string t) {
    auto r = parse_snapshot_description(t);
    return !r.ok() && r.error().code == ErrorCode::image_corrupt;
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    auto t = text;
    auto at = t.find(from);
    REQUIRE(at != std::string::npos);
    return t.replace(at, from.size(), to);
  };
  CHECK(refused(""));
  CHECK(refused(text.substr(0, text.size() - 1)));                       // no final newline
  CHECK(refused(replace("sandboxd-snapshot 1", "sandboxd-layer 1")));    // another kind
  CHECK(refused(text + "key other\n"));                                  // a line twice
  CHECK(refused(text + "file ram " + text.substr(text.rfind("file ram ") + 9)));
  CHECK(refused(text + "owner root\n"));                                 // unknown line
  CHECK(refused(replace("key " + d.key, "key a b")));                    // white space in a key
  CHECK(refused(replace("fingerprint " + hex64('f'), "fingerprint " + hex64('F'))));
  CHECK(refused(replace("memory_mb 256", "memory_mb 255")));             // RAM file of another size
  CHECK(refused(replace("memory_mb 256", "memory_mb 4096")));            // over the bound
  CHECK(refused(replace("memory_mb 256", "memory_mb 0256")));
  CHECK(refused(replace("123456 " + hex64('a') + " zstd", "123456 " + hex64('a') + " raw")));  // raw of another size
  CHECK(refused(replace(" zstd 2345", " lz4 2345")));
  CHECK(refused(replace(" zstd 2345", " zstd 99999999999999999999999")));
  CHECK(refused(replace("language javascript", "language cobol")));
  CHECK(refused(replace("key " + d.key + "\n", "")));                    // a line missing
  CHECK(refused(replace("file state", "file ram")));                     // a file twice, one missing
  CHECK(refused(text + std::string(kMaxSnapshotDescriptionBytes, '#')));
}

TEST_CASE("snapshot files: zstd where it pays, back to the same bytes and hash with holes kept; bad frames refused") {
  std::atomic<bool> stop{false};
  // Mostly zeros, like a guest's RAM after boot.
  const uint64_t size = uint64_t{16} << 20;
  auto ram = sparse_file(size, 1 << 20, "not zero");
  unique_fd packed(::memfd_create("packed", MFD_CLOEXEC));
  std::string packed_sha;
  auto n = zstd_compress_fd(ram.get(), size, packed.get(), &packed_sha, stop);
  REQUIRE_MESSAGE(n.ok(), n.error().message);
  REQUIRE(n->has_value());
  CHECK(**n < size / 100);
  CHECK(packed_sha == sha256_fd(packed.get()).value());

  char tmpl[] = "/tmp/sandboxd-unpacked-XXXXXX";
  unique_fd out(::mkstemp(tmpl));
  ::unlink(tmpl);
  auto sha = zstd_decompress_fd(packed.get(), **n, out.get(), size, stop);
  REQUIRE_MESSAGE(sha.ok(), sha.error().message);
  CHECK(*sha == sha256_fd(ram.get()).value());
  CHECK(sha256_fd(out.get()).value() == *sha);
  struct stat st{};
  REQUIRE(::fstat(out.get(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_size) == size);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 < size / 10);  // the zeros stayed holes

  auto refused = [&](uint64_t in_size, uint64_t bytes) {
    unique_fd o(::memfd_create("out", MFD_CLOEXEC));
    auto r = zstd_decompress_fd(packed.get(), in_size, o.get(), bytes, stop);
    return !r.ok() && r.error().code == ErrorCode::image_corrupt;
  };
  CHECK(refused(**n - 1, size));  // truncated
  CHECK(refused(**n, size - 1));  // more than the description says
  CHECK(refused(**n, size + 1));  // less
  // Trailing bytes after the frame.
  REQUIRE(::pwrite(packed.get(), "junk", 4, static_cast<off_t>(**n)) == 4);
  CHECK(refused(**n + 4, size));
  // A flipped byte: zstd's own checksum, if not the frame, refuses it.
  REQUIRE(::pwrite(packed.get(), "\x5a", 1, static_cast<off_t>(**n / 2)) == 1);
  CHECK(refused(**n, size));

  // Random bytes do not compress: sent as they are.
  std::string noise(1 << 20, '\0');
  std::mt19937 rng(7);
  for (auto& c : noise) c = static_cast<char>(rng());
  auto random = sparse_file(noise.size(), noise.size(), noise);
  unique_fd sink(::memfd_create("sink", MFD_CLOEXEC));
  auto none = zstd_compress_fd(random.get(), noise.size(), sink.get(), &packed_sha, stop);
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
}

TEST_CASE("snapshot share: a template goes up compressed where it pays, description last, and comes back verified") {
  MemoryS3 s3;
  uv_loop_t loop;
  uv_loop_init(&loop);
  char tmpl[] = "/tmp/sandboxd-snapshare-XXXXXX";
  std::string root = ::mkdtemp(tmpl);
  {
    SnapshotShare share(&loop, s3.options());
    std::string noise(64 << 10, '\0');
    std::mt19937 rng(11);
    for (auto& c : noise) c = static_cast<char>(rng());
    auto state = sparse_file(noise.size(), noise.size(), noise);
    auto ram = sparse_file(uint64_t{8} << 20, 1 << 20, "guest page");
    SnapshotDescription d;
    d.key = "k0123";
    d.fingerprint = hex64('f');
    d.memory_mb = 8;
    d.state = {noise.size(), sha256_fd(state.get()).value()};
    d.ram = {uint64_t{8} << 20, sha256_fd(ram.get()).value()};
    std::optional<Result<uint64_t>> sent;
    share.upload(d, std::move(state), std::move(ram), [&](Result<uint64_t> r) { sent = std::move(r); });
    auto up = run_until(&loop, sent);
    REQUIRE_MESSAGE(up.ok(), up.error().message);
    REQUIRE(s3.puts.size() == 3);
    CHECK(s3.puts[0] == "/bucket/node/snapshots/k0123.state");  // noise: raw
    CHECK(s3.puts[1] == "/bucket/node/snapshots/k0123.ram.zst");
    CHECK(s3.puts[2] == "/bucket/node/snapshots/k0123.snapshot");  // last
    CHECK(s3.objects[s3.puts[1]].size() < (size_t{8} << 20) / 100);
    CHECK(*up == s3.objects[s3.puts[0]].size() + s3.objects[s3.puts[1]].size());
    auto stored = parse_snapshot_description(s3.objects[s3.puts[2]]);
    REQUIRE(stored.ok());
    CHECK(stored->ram.encoding == SnapshotEncoding::zstd);
    CHECK(stored->state.encoding == SnapshotEncoding::raw);
    CHECK(stored->ram.sha256 == d.ram.sha256);

    auto fetch = [&](const std::string& key, const std::string& dir) {
      std::filesystem::create_directories(dir);
      std::optional<Result<SnapshotDescription>> got;
      share.fetch(key, dir, [&](Result<SnapshotDescription> r) { got = std::move(r); });
      return run_until(&loop, got);
    };
    auto got = fetch("k0123", root + "/a");
    REQUIRE_MESSAGE(got.ok(), got.error().message);
    CHECK(got->memory_mb == 8);
    CHECK(sha256_file(root + "/a/ram").value() == d.ram.sha256);
    CHECK(sha256_file(root + "/a/state").value() == d.state.sha256);

    auto missing = fetch("other", root + "/b");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == ErrorCode::not_found);

    // A flipped byte in the raw state: refused by its hash, nothing left behind.
    s3.objects[s3.puts[0]][100] ^= 0x5a;
    auto corrupt = fetch("k0123", root + "/c");
    REQUIRE_FALSE(corrupt.ok());
    CHECK(corrupt.error().code == ErrorCode::image_corrupt);
    CHECK(corrupt.error().message.find("SHA-256") != std::string::npos);
    CHECK(std::filesystem::is_empty(root + "/c"));
    // A description naming another key is not this template's.
    s3.objects["/bucket/node/snapshots/k9.snapshot"] = s3.objects[s3.puts[2]];
    auto foreign = fetch("k9", root + "/d");
    REQUIRE_FALSE(foreign.ok());
    CHECK(foreign.error().code == ErrorCode::image_corrupt);
    // Over the node's bound: not even asked for.
    auto small = s3.options();
    small.max_image_bytes = 1 << 20;
    SnapshotShare bounded(&loop, small);
    std::optional<Result<SnapshotDescription>> over;
    std::filesystem::create_directories(root + "/e");
    bounded.fetch("k0123", root + "/e", [&](Result<SnapshotDescription> r) { over = std::move(r); });
    auto big = run_until(&loop, over);
    REQUIRE_FALSE(big.ok());
    CHECK(big.error().code == ErrorCode::capacity);
    std::optional<Result<uint64_t>> refused;
    bounded.upload(d, unique_fd(), unique_fd(), [&](Result<uint64_t> r) { refused = std::move(r); });
    REQUIRE(refused.has_value());
    CHECK(refused->error().code == ErrorCode::capacity);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
  std::filesystem::remove_all(root);
}
