#include "daemon/layers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sandbox/limits.h>

#include "common/protocol.h"
#include "common/unique_fd.h"
#include "daemon/digest.h"
#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kImageSuffix = ".erofs";
constexpr std::string_view kMetaSuffix = ".layer";
constexpr std::string_view kTempSuffix = ".tmp";

uint64_t ms_since(std::chrono::steady_clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count());
}

uint64_t now_unix_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

Result<void> write_synced(const std::string& path, std::string_view data) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return Error::sys("open", path);
  while (!data.empty()) {
    ssize_t n = ::write(fd.get(), data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  if (::fsync(fd.get()) != 0) return Error::sys("fsync", path);
  return ok();
}

Result<void> fsync_path(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::sys("open", path);
  if (::fsync(fd.get()) != 0) return Error::sys("fsync", path);
  return ok();
}

}  // namespace

std::string layer_key(const LayerKeyInputs& in) {
  // Length-prefixed fields: no two input lists serialize alike.
  std::string s;
  auto add = [&](std::string_view v) { s += std::to_string(v.size()) + ":" + std::string(v) + ";"; };
  add("sandboxd-layer-key 1");
  add(language_name(in.language));
  add(std::to_string(in.packages.size()));
  for (const auto& p : in.packages) add(p);
  add(in.base_image);
  add(in.interpreter);
  add(in.installer);
  add(in.index_url);
  add(in.source_builds ? "source" : "binary");
  // Added only when used: keys of requests without Debian packages stay
  // as they were.
  if (!in.apt_sources.empty() || !in.apt_installer.empty()) {
    add("apt");
    add(in.apt_sources);
    add(in.apt_installer);
  }
  std::string_view prefix = in.language == Language::javascript ? "js-" : in.language == Language::raw ? "sh-" : "py-";
  return std::string(prefix) + sha256_hex(s).substr(0, 40);
}

bool valid_layer_key(std::string_view key) {
  if (key.size() != 43 || !(key.starts_with("py-") || key.starts_with("js-") || key.starts_with("sh-"))) return false;
  return std::all_of(key.begin() + 3, key.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Result<std::vector<std::string>> parse_lock(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    auto nl = text.find('\n', start);
    auto line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
    start = nl == std::string_view::npos ? text.size() : nl + 1;
    if (line.empty()) continue;
    if (line.size() > limits::kMaxNameBytes || !printable_line(line))
      return Error::make(ErrorCode::package_install_failed, "the builder's lock has an unreadable line");
    if (out.size() >= proto::kMaxLockEntries)
      return Error::make(ErrorCode::package_install_failed,
                         "the builder's lock lists more than " + std::to_string(proto::kMaxLockEntries) + " packages");
    out.emplace_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------- LayerStore

LayerStore::LayerStore(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}

std::string LayerStore::image_path(const std::string& key) const { return dir_ + "/" + key + std::string(kImageSuffix); }
std::string LayerStore::meta_path(const std::string& key) const { return dir_ + "/" + key + std::string(kMetaSuffix); }
std::string LayerStore::temp_path(const std::string& key) const {
  return dir_ + "/" + key + std::string(kImageSuffix) + std::string(kTempSuffix);
}

Result<LayerStore::Entry> LayerStore::load(const std::string& key) const {
  std::ifstream in(meta_path(key), std::ios::binary);
  if (!in) return Error::sys("open", meta_path(key));
  std::string text(kMaxLayerDescriptionBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  auto d = parse_layer_description(key, text);
  if (!d) return std::move(d).error().context(meta_path(key));
  Entry e;
  static_cast<LayerDescription&>(e) = std::move(*d);
  struct stat st {};
  if (::stat(meta_path(key).c_str(), &st) == 0)
    e.info.last_used_unix_ms = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
  return e;
}

std::vector<std::string> LayerStore::recover() {
  std::vector<std::string> removed;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  std::vector<std::string> keys;
  for (const auto& de : fs::directory_iterator(dir_, ec)) {
    auto name = de.path().filename().string();
    if (name.ends_with(kTempSuffix)) {
      fs::remove(de.path(), ec);
      removed.push_back(name + " (an unfinished build)");
    } else if (name.ends_with(kMetaSuffix)) {
      keys.push_back(name.substr(0, name.size() - kMetaSuffix.size()));
    } else if (name.ends_with(kImageSuffix)) {
      auto key = name.substr(0, name.size() - kImageSuffix.size());
      if (!fs::exists(meta_path(key), ec)) {
        fs::remove(de.path(), ec);
        removed.push_back(name + " (no description)");
      }
    }
  }
  for (const auto& key : keys) {
    auto e = valid_layer_key(key) ? load(key) : Result<Entry>(Error::make(ErrorCode::image_corrupt, "bad key"));
    auto hash = e ? sha256_file(image_path(key)) : Result<std::string>(e.error());
    if (!e || !hash || *hash != e->sha256) {
      fs::remove(image_path(key), ec);
      fs::remove(meta_path(key), ec);
      removed.push_back(key + " (" + (!e ? e.error().message : !hash ? hash.error().message : "image hash differs") + ")");
      continue;
    }
    layers_[key] = std::move(*e);
  }
  // Last use across the restart, from the descriptions' mtimes.
  std::vector<Entry*> by_use;
  for (auto& [key, e] : layers_) by_use.push_back(&e);
  std::sort(by_use.begin(), by_use.end(),
            [](const Entry* a, const Entry* b) { return a->info.last_used_unix_ms < b->info.last_used_unix_ms; });
  for (Entry* e : by_use) e->use_seq = e->generation = next_seq_++;
  evict();
  return removed;
}

Result<LayerStore::Written> LayerStore::write_out(const std::string& key, LayerInfo info,
                                                 const std::string& expect_sha256,
                                                 const std::atomic<bool>* stop) const {
  auto tmp = temp_path(key);
  auto meta_tmp = meta_path(key) + std::string(kTempSuffix);
  Written w;
  bool renamed = false;
  auto steps = [&]() -> Result<void> {
    w.image.reset(::open(tmp.c_str(), O_RDONLY | O_CLOEXEC));
    if (!w.image) return Error::sys("open", tmp);
    auto hash = sha256_fd(w.image.get(), stop);
    if (!hash) return std::move(hash).error().context(tmp);
    if (!expect_sha256.empty() && *hash != expect_sha256)
      return Error::make(ErrorCode::image_corrupt, "the image's SHA-256 is " + *hash + ", not " + expect_sha256);
    struct stat st {};
    if (::fstat(w.image.get(), &st) != 0) return Error::sys("stat", tmp);
    info.key = key;
    info.bytes = static_cast<uint64_t>(st.st_size);
    info.last_used_unix_ms = now_unix_ms();
    info.users = 0;
    info.building = false;
    // Everything on disk before the renames make the layer visible.
    if (::fsync(w.image.get()) != 0) return Error::sys("fsync", tmp);
    if (auto r = write_synced(meta_tmp, format_layer_description({info, *hash})); !r) return r.error();
    if (::rename(tmp.c_str(), image_path(key).c_str()) != 0) return Error::sys("rename", tmp);
    renamed = true;
    if (::rename(meta_tmp.c_str(), meta_path(key).c_str()) != 0) return Error::sys("rename", meta_tmp);
    if (auto r = fsync_path(dir_); !r) return r.error();
    w.info = std::move(info);
    w.sha256 = std::move(*hash);
    return ok();
  };
  if (auto r = steps(); !r) {
    abort(key);
    if (renamed) {  // a layer outside the store would escape its size limit
      std::error_code ec;
      fs::remove(meta_path(key), ec);
      fs::remove(image_path(key), ec);
    }
    return std::move(r).error().context("publishing layer " + key);
  }
  return w;
}

void LayerStore::publish(const Written& w) {
  Entry e;
  e.info = w.info;
  e.sha256 = w.sha256;
  e.use_seq = e.generation = next_seq_++;
  layers_[w.info.key] = std::move(e);
}

void LayerStore::abort(const std::string& key) const {
  std::error_code ec;
  fs::remove(temp_path(key), ec);
  fs::remove(meta_path(key) + std::string(kTempSuffix), ec);
}

std::string LayerStore::sha256(const std::string& key) const {
  auto it = layers_.find(key);
  return it == layers_.end() ? std::string() : it->second.sha256;
}

Result<std::pair<LayerDescription, unique_fd>> LayerStore::open(const std::string& key) const {
  auto it = layers_.find(key);
  if (it == layers_.end()) return Error::make(ErrorCode::not_found, "no layer " + key);
  unique_fd image(::open(image_path(key).c_str(), O_RDONLY | O_CLOEXEC));
  if (!image) return Error::sys("open", image_path(key));
  return std::pair<LayerDescription, unique_fd>{it->second, std::move(image)};
}

void LayerStore::mark_used(const std::string& key) {
  auto it = layers_.find(key);
  if (it == layers_.end()) return;
  it->second.info.last_used_unix_ms = now_unix_ms();
  it->second.use_seq = next_seq_++;
  ::utimensat(AT_FDCWD, meta_path(key).c_str(), nullptr, 0);
}

void LayerStore::forget_corrupt(const std::string& key) {
  auto it = layers_.find(key);
  if (it == layers_.end()) return;
  if (it->second.info.users == 0) remove(key);
  else layers_.erase(it);
}

uint64_t LayerStore::hold(const std::string& key) {
  auto it = layers_.find(key);
  if (it == layers_.end()) return 0;
  ++it->second.info.users;
  return it->second.generation;
}

void LayerStore::release(const std::string& key, uint64_t generation) {
  auto it = layers_.find(key);
  if (it == layers_.end() || it->second.generation != generation || it->second.info.users == 0) return;
  --it->second.info.users;
  evict();
}

std::vector<LayerInfo> LayerStore::list() const {
  std::vector<LayerInfo> out;
  for (const auto& [key, e] : layers_) out.push_back(e.info);
  return out;
}

void LayerStore::remove(const std::string& key) {
  std::error_code ec;
  fs::remove(meta_path(key), ec);  // first: without it the image is no layer
  fs::remove(image_path(key), ec);
  layers_.erase(key);
}

Result<void> LayerStore::drop(const std::string& key) {
  auto it = layers_.find(key);
  if (it == layers_.end()) return Error::make(ErrorCode::not_found, "no layer '" + key + "'");
  if (it->second.info.users > 0)
    return Error::make(ErrorCode::capacity, "layer " + key + " is in use by " + std::to_string(it->second.info.users) +
                                                " runs or sessions");
  remove(key);
  return ok();
}

size_t LayerStore::drop_unused() {
  std::vector<std::string> gone;
  for (const auto& [key, e] : layers_)
    if (e.info.users == 0) gone.push_back(key);
  for (const auto& key : gone) remove(key);
  return gone.size();
}

uint64_t LayerStore::bytes() const {
  uint64_t total = 0;
  for (const auto& [key, e] : layers_) total += e.info.bytes;
  return total;
}

void LayerStore::evict() {
  while (bytes() > max_bytes_) {
    const Entry* oldest = nullptr;
    for (const auto& [key, e] : layers_)
      if (e.info.users == 0 && (!oldest || e.use_seq < oldest->use_seq)) oldest = &e;
    if (!oldest) return;  // everything left is in use: over budget until released
    remove(oldest->info.key);
  }
}

// ---------------------------------------------------------------- LayerGrant

LayerGrant::LayerGrant(std::weak_ptr<LayerStore> store, std::string key, uint64_t generation, std::string path,
                       unique_fd image, std::string sha256, std::string cache, uint64_t build_ms)
    : store_(std::move(store)),
      key_(std::move(key)),
      generation_(generation),
      path_(std::move(path)),
      image_(std::move(image)),
      sha256_(std::move(sha256)),
      cache_(std::move(cache)),
      build_ms_(build_ms) {}

LayerGrant::~LayerGrant() {
  if (auto s = store_.lock()) s->release(key_, generation_);
}

// ---------------------------------------------------------------- LayerCache

LayerCache::LayerCache(uv_loop_t* loop, std::shared_ptr<LayerStore> store, LayerBuildFn build,
                       std::unique_ptr<LayerRemote> remote)
    : store_(std::move(store)), build_(std::move(build)), remote_(std::move(remote)), hasher_(loop, 2) {}

LayerCache::~LayerCache() {
  // On the loop: no answer of the hasher's can run meanwhile, and it drops
  // them when it goes, right after this.
  for (const auto& [key, c] : checks_) store_->release(key, c.generation);
}

template <class T>
void LayerCache::off_loop(std::function<T(const std::atomic<bool>* stop)> work, std::function<void(T)> then) {
  bool posted = hasher_.post([work, then](const std::atomic<bool>& stop) -> std::function<void()> {
    auto result = std::make_shared<T>(work(&stop));
    return [then, result] { then(std::move(*result)); };
  });
  if (!posted) then(work(nullptr));
}

Result<std::shared_ptr<LayerGrant>> LayerCache::grant(const std::string& key, const unique_fd& image,
                                                       const std::string& sha256, std::string cache,
                                                       uint64_t build_ms) {
  // Each grant has the checked image open: a later rebuild under the same
  // path never reaches its VMs.
  unique_fd own(::fcntl(image.get(), F_DUPFD_CLOEXEC, 0));
  if (!own) return Error::sys("dup").context("layer " + key);
  auto generation = store_->hold(key);
  return std::make_shared<LayerGrant>(store_, key, generation, store_->image_path(key), std::move(own), sha256,
                                      std::move(cache), build_ms);
}

void LayerCache::get(const LayerKeyInputs& inputs, Callback callback) {
  auto key = layer_key(inputs);
  if (auto b = builds_.find(key); b != builds_.end()) {
    b->second.waiters.push_back(std::move(callback));
    return;
  }
  if (auto c = checks_.find(key); c != checks_.end()) {
    c->second.waiters.push_back(std::move(callback));
    return;
  }
  if (store_->has(key)) return check(key, inputs, std::move(callback));
  auto& b = builds_[key];
  b.inputs = inputs;
  b.waiters.push_back(std::move(callback));
  start(key);
}

void LayerCache::check(const std::string& key, const LayerKeyInputs& inputs, Callback callback) {
  auto layer = store_->open(key);
  if (!layer) {
    Check c;
    c.inputs = inputs;
    c.waiters.push_back(std::move(callback));
    return rebuild(key, std::move(c), layer.error());
  }
  auto& c = checks_[key];
  c.inputs = inputs;
  c.waiters.push_back(std::move(callback));
  c.sha256 = layer->first.sha256;
  c.generation = store_->hold(key);  // not evicted or dropped while hashed
  auto image = std::make_shared<unique_fd>(std::move(layer->second));
  off_loop<Result<std::string>>([image](const std::atomic<bool>* stop) { return sha256_fd(image->get(), stop); },
                                [this, key, image](Result<std::string> hash) { checked(key, *image, std::move(hash)); });
}

void LayerCache::checked(const std::string& key, const unique_fd& image, Result<std::string> hash) {
  auto it = checks_.find(key);
  if (it == checks_.end()) return;
  Check c = std::move(it->second);
  checks_.erase(it);
  if (!hash || *hash != c.sha256) {
    store_->release(key, c.generation);
    return rebuild(key, std::move(c),
                   hash ? Error::make(ErrorCode::image_corrupt, "image hash differs from the recorded one") : hash.error());
  }
  store_->mark_used(key);
  // Every grant holds the layer before the check lets go of it, and before
  // any answer runs (an answer may drop its grant at once).
  std::vector<Result<std::shared_ptr<LayerGrant>>> grants;
  for (size_t i = 0; i < c.waiters.size(); ++i) grants.push_back(grant(key, image, c.sha256, "hit", 0));
  store_->release(key, c.generation);
  for (size_t i = 0; i < c.waiters.size(); ++i) answer(c.waiters[i], std::move(grants[i]), LayerRequest::hit);
}

void LayerCache::rebuild(const std::string& key, Check c, const Error& why) {
  log_warning("layer " + key + ": " + why.message + "; removed, building it again");
  store_->forget_corrupt(key);
  auto& b = builds_[key];
  b.inputs = std::move(c.inputs);
  b.waiters = std::move(c.waiters);
  start(key);
}

void LayerCache::start(const std::string& key) {
  auto& b = builds_[key];
  b.started = std::chrono::steady_clock::now();
  store_->abort(key);  // whatever an earlier failure left
  if (!remote_) return build(key);
  remote_->fetch(key, store_->temp_path(key), [this, key](Result<LayerDescription> d) { fetched(key, std::move(d)); });
}

void LayerCache::build(const std::string& key) {
  auto& b = builds_[key];
  store_->abort(key);  // what a failed fetch left
  build_(b.inputs, store_->temp_path(key), [this, key](Result<std::string> lock) { finish(key, std::move(lock)); });
}

void LayerCache::fetched(const std::string& key, Result<LayerDescription> d) {
  auto it = builds_.find(key);
  if (it == builds_.end()) return;
  const auto& inputs = it->second.inputs;
  if (!d) return fall_back(key, cache_fetch_of(d.error()), d.error());
  // The key covers the language and packages: a description that names
  // others is not this layer, whatever its hash.
  if (d->info.language != inputs.language || d->info.packages != inputs.packages)
    return fall_back(key, CacheFetch::corrupt,
                     Error::make(ErrorCode::image_corrupt, "its description names other packages"));
  LayerInfo info;
  info.language = inputs.language;
  info.packages = inputs.packages;
  info.lock = std::move(d->info.lock);
  auto store = store_;
  off_loop<Result<LayerStore::Written>>(
      [store, key, info, expect = d->sha256](const std::atomic<bool>* stop) {
        return store->write_out(key, info, expect, stop);
      },
      [this, key](Result<LayerStore::Written> w) { stored_fetch(key, std::move(w)); });
}

void LayerCache::fall_back(const std::string& key, CacheFetch result, const Error& e) {
  ++stats_.fetches[static_cast<size_t>(result)];
  if (result != CacheFetch::miss) log_warning("layer " + key + " from the shared store: " + e.message + "; building it here");
  build(key);
}

void LayerCache::stored_fetch(const std::string& key, Result<LayerStore::Written> w) {
  auto it = builds_.find(key);
  if (it == builds_.end()) return;
  if (!w)
    return fall_back(key, w.error().code == ErrorCode::image_corrupt ? CacheFetch::corrupt : CacheFetch::error,
                     w.error());
  store_->publish(*w);
  auto bytes = w->info.bytes;
  ++stats_.fetches[static_cast<size_t>(CacheFetch::hit)];
  stats_.fetch_bytes += bytes;
  auto ms = ms_since(it->second.started);
  log_info("layer " + key + ": fetched from the shared store (" + std::to_string(bytes) + " bytes, " +
           std::to_string(ms) + " ms)");
  grant_all(key, LayerRequest::fetched, *w, ms);
}

void LayerCache::finish(const std::string& key, Result<std::string> lock) {
  auto it = builds_.find(key);
  if (it == builds_.end()) return;
  auto entries = lock ? parse_lock(*lock) : Result<std::vector<std::string>>(std::move(lock).error());
  if (!entries) return built(key, std::move(entries).error());
  LayerInfo info;
  info.language = it->second.inputs.language;
  info.packages = it->second.inputs.packages;
  info.lock = std::move(*entries);
  auto store = store_;
  off_loop<Result<LayerStore::Written>>(
      [store, key, info](const std::atomic<bool>* stop) { return store->write_out(key, info, {}, stop); },
      [this, key](Result<LayerStore::Written> w) { built(key, std::move(w)); });
}

void LayerCache::built(const std::string& key, Result<LayerStore::Written> w) {
  auto it = builds_.find(key);
  if (it == builds_.end()) return;
  auto build_ms = ms_since(it->second.started);
  size_t result = w ? 0 : 1;
  ++stats_.builds[result];
  stats_.build_time[result].observe(build_ms);
  if (!w) {
    Build b = std::move(it->second);
    builds_.erase(it);
    store_->abort(key);
    auto e = std::move(w).error().context("layer " + key);
    for (auto& waiter : b.waiters) answer(waiter, Error(e), LayerRequest::failed);
    return;
  }
  store_->publish(*w);
  upload(key);
  grant_all(key, LayerRequest::built, *w, build_ms);
}

void LayerCache::grant_all(const std::string& key, LayerRequest how, const LayerStore::Written& w, uint64_t ms) {
  auto it = builds_.find(key);
  if (it == builds_.end()) return;
  Build b = std::move(it->second);
  builds_.erase(it);
  auto how_of = [&](size_t i) { return i == 0 ? how : LayerRequest::joined; };
  std::vector<Result<std::shared_ptr<LayerGrant>>> grants;
  for (size_t i = 0; i < b.waiters.size(); ++i)
    grants.push_back(grant(key, w.image, w.sha256, std::string(layer_request_name(how_of(i))), ms));
  // Only once its users hold it: the new layer could have been the one to go.
  store_->evict();
  for (size_t i = 0; i < b.waiters.size(); ++i) answer(b.waiters[i], std::move(grants[i]), how_of(i));
}

void LayerCache::upload(const std::string& key) {
  if (!remote_) return;
  auto layer = store_->open(key);
  if (!layer) {
    ++stats_.uploads[1];
    return log_warning("layer " + key + " not uploaded: " + layer.error().message);
  }
  remote_->upload(std::move(layer->first), std::move(layer->second), [this, key](Result<uint64_t> sent) {
    ++stats_.uploads[sent ? 0 : 1];
    if (!sent) return log_warning("layer " + key + " not uploaded to the shared store: " + sent.error().message);
    stats_.upload_bytes += *sent;
    log_info("layer " + key + ": uploaded to the shared store");
  });
}

void LayerCache::answer(const Callback& callback, Result<std::shared_ptr<LayerGrant>> g, LayerRequest how) {
  ++stats_.requests[static_cast<size_t>(g ? how : LayerRequest::failed)];
  callback(std::move(g));
}

LayerStats LayerCache::stats() const {
  LayerStats s = stats_;
  s.cache_bytes = store_->bytes();
  s.layers = store_->list().size();
  s.building = builds_.size();
  return s;
}

Result<std::vector<LayerInfo>> LayerCache::list(const std::string& drop, bool drop_all) {
  if (!drop.empty()) {
    if (!valid_layer_key(drop)) return Error::make(ErrorCode::invalid_argument, "'" + drop + "' is not a layer key");
    if (auto r = store_->drop(drop); !r) return r.error();
  }
  if (drop_all) store_->drop_unused();
  auto out = store_->list();
  for (const auto& [key, b] : builds_) {
    LayerInfo info;
    info.key = key;
    info.language = b.inputs.language;
    info.packages = b.inputs.packages;
    info.users = static_cast<uint32_t>(b.waiters.size());
    info.building = true;
    out.push_back(std::move(info));
  }
  if (out.size() > proto::kMaxLayerEntries) out.resize(proto::kMaxLayerEntries);
  // One frame decodes at most kMaxDecodeObjects: long locks are cut short
  // in a listing (the description on disk keeps them whole).
  size_t budget = limits::kMaxDecodeObjects / 2;
  for (auto& l : out) {
    size_t n = std::min(l.lock.size(), budget);
    l.lock.resize(n);
    budget -= n;
  }
  return out;
}

}  // namespace sandbox::daemon
