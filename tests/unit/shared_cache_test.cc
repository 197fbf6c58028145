// The shared caches (SPEC F27) without a daemon: request signing against
// AWS's published examples, the operator's URL and credentials, layer
// descriptions from an untrusted store, the object store client against a
// canned HTTP server on loopback (bounds, errors, deadlines), and the
// layer cache's fetch-before-build and upload-after-build with a fake store.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/unique_fd.h"
#include "daemon/config.h"
#include "daemon/digest.h"
#include "daemon/layers.h"
#include "daemon/object_store.h"
#include "daemon/offload.h"
#include "daemon/sigv4.h"

using namespace sandbox;
using namespace sandbox::daemon;
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

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/sandboxd-share-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

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
  std::unique_ptr<LayerCache> cache;
  explicit Node(std::shared_ptr<FakeRemote::Shared> remote) {
    cache = std::make_unique<LayerCache>(
        store,
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
    FakeRemote::run(*remote);
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
