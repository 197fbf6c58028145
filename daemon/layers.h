// Package layers (SPEC F14): read-only filesystem images that a builder VM
// made from a package list, cached on the host by a key over everything
// that decides their contents. The host never reads inside an image: it
// records its SHA-256 at publish, checks it on every attach, and keeps the
// installer's resolved lock beside it (bounded text, shown by `layers`).
// Hashing an image takes time in proportion to its size, so both happen on
// a thread of the cache's own, never on the event loop.
//
// LayerStore is the directory; LayerCache adds what a request needs: one
// build per key however many ask at once, in-use counts that eviction
// respects, a rebuild when a layer turns out corrupt, and, with a shared
// store (LayerRemote), a fetch before a build and an upload after one.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <sandbox/result.h>
#include <sandbox/types.h>

#include "common/unique_fd.h"

#include "daemon/layer_description.h"
#include "daemon/metrics.h"
#include "daemon/offload.h"

namespace sandbox::daemon {

// Everything that decides what a layer holds: a change in any of them
// gives another key, so a cached layer never serves a request it was not
// built for.
struct LayerKeyInputs {
  Language language = Language::python;
  std::vector<std::string> packages;  // canonical, sorted (packages.h)
  std::string base_image;             // the root image's SHA-256
  std::string interpreter;            // "python3.11=3.11.2-6+deb12u6"
  std::string installer;              // "python3-pip=23.0.1+dfsg-1"
  std::string index_url;
  bool source_builds = false;         // sdists allowed, or npm install scripts
  // Only for a request with Debian packages: the archive and apt's version.
  std::string apt_sources;            // "URL SUITE COMPONENT..." lines
  std::string apt_installer;          // "apt=2.6.1"
};
// "py-", "js-" or "sh-" (raw runs) and 40 hex digits of a SHA-256 over
// the inputs.
std::string layer_key(const LayerKeyInputs& inputs);
// Keys as layer_key makes them: nothing a path could misuse.
bool valid_layer_key(std::string_view key);

// The resolved lock from a builder, checked before it is stored: printable
// lines, each at most kMaxNameBytes, at most kMaxLockEntries.
Result<std::vector<std::string>> parse_lock(std::string_view text);

class LayerStore {
 public:
  // `dir` is created if missing; `max_bytes` bounds the images' total.
  LayerStore(std::string dir, uint64_t max_bytes);

  // Start-up: removes what a crash left (temp files) and layers whose
  // image or description is missing or whose image no longer has its
  // recorded hash. Returns what it removed, for the log.
  std::vector<std::string> recover();

  // Where a build writes its image; removed by abort or replaced by publish.
  std::string temp_path(const std::string& key) const;
  // Where a published layer's image is.
  std::string image_path(const std::string& key) const;

  // A build's or fetch's image, named and on disk, not yet in the store.
  struct Written {
    LayerInfo info;
    std::string sha256;
    unique_fd image;  // the bytes hashed, open read-only
  };
  // Hashes the image at temp_path(key), writes the description, fsyncs both
  // and renames them into place, description last (a layer exists on disk
  // once it has one). With `expect_sha256`, an image with another hash is
  // image_corrupt. On failure none of the key's files is left. Touches only
  // this key's files, which the one build of a key owns: safe on another
  // thread while the loop uses the store. `stop` makes it give up.
  Result<Written> write_out(const std::string& key, LayerInfo info, const std::string& expect_sha256,
                            const std::atomic<bool>* stop = nullptr) const;
  // The written layer joins the store, unused: evict() once its first
  // users hold it, or it could be the one to go.
  void publish(const Written& w);
  void abort(const std::string& key) const;

  bool has(const std::string& key) const { return layers_.count(key) != 0; }
  // The recorded SHA-256 of a published layer's image (empty: none).
  std::string sha256(const std::string& key) const;
  // A published layer's description and its image opened read-only (for
  // an upload, which then reads the image whatever happens to the path).
  Result<std::pair<LayerDescription, unique_fd>> open(const std::string& key) const;

  // Users: a layer with users is never evicted or dropped. A hold answers
  // the layer's generation, and only a release of that generation counts:
  // a layer found corrupt and rebuilt while old users still ran is a new
  // one, which their releases must not drain.
  uint64_t hold(const std::string& key);
  void release(const std::string& key, uint64_t generation);
  // A check found the image as recorded: used now (the description's
  // mtime keeps it across restarts).
  void mark_used(const std::string& key);
  // A check found it corrupt: removed, or only forgotten while users still
  // have it open (they keep what they attached; new requests rebuild).
  void forget_corrupt(const std::string& key);

  std::vector<LayerInfo> list() const;
  // Removes one layer (not_found; capacity when in use).
  Result<void> drop(const std::string& key);
  // Removes every layer not in use; returns how many.
  size_t drop_unused();
  // Least recently used layers without users go until the total fits.
  void evict();
  uint64_t bytes() const;
  const std::string& dir() const { return dir_; }

 private:
  struct Entry : LayerDescription {
    uint64_t use_seq = 0;  // LRU order: clock ticks can tie, this cannot
    uint64_t generation = 0;
  };
  std::string meta_path(const std::string& key) const;
  void remove(const std::string& key);
  Result<Entry> load(const std::string& key) const;

  std::string dir_;
  uint64_t max_bytes_;
  std::map<std::string, Entry> layers_;
  uint64_t next_seq_ = 1;
};

// What a run or session gets: a verified image to attach read-only, and
// how it was obtained. Releases its hold on the layer when destroyed.
class LayerGrant {
 public:
  LayerGrant(std::weak_ptr<LayerStore> store, std::string key, uint64_t generation, std::string path, unique_fd image,
             std::string sha256, std::string cache, uint64_t build_ms);
  ~LayerGrant();
  LayerGrant(const LayerGrant&) = delete;
  LayerGrant& operator=(const LayerGrant&) = delete;
  const std::string& path() const { return path_; }
  // The image as verified, open read-only: VMs get this descriptor, so a
  // later rebuild under the same path never reaches a VM of this grant.
  int fd() const { return image_.get(); }
  // What a snapshot of a VM with this layer depends on: the key and the
  // exact image (a rebuild may differ in bytes).
  std::string identity() const { return key_ + ":" + sha256_; }
  LayerUse use() const { return {key_, cache_, build_ms_}; }

 private:
  std::weak_ptr<LayerStore> store_;
  std::string key_;
  uint64_t generation_;
  std::string path_;
  unique_fd image_;
  std::string sha256_, cache_;
  uint64_t build_ms_;
};

// Builds one layer: writes the image at `image_path` and calls `done` once,
// with the resolved lock text, or with the error (package_install_failed
// with the installer's last lines, timeout...). May call `done` later from
// the event loop.
using LayerBuildFn = std::function<void(const LayerKeyInputs& inputs, const std::string& image_path,
                                        std::function<void(Result<std::string> lock)> done)>;

// Layers other nodes built, in a store they share (layer_share.h): asked
// before a build, given every layer this node builds. Answers come on the
// loop, from a later turn or at once.
class LayerRemote {
 public:
  virtual ~LayerRemote() = default;
  // Writes layer `key`'s image at `image_path` and answers its description
  // (not yet checked against the image: the cache does that); not_found
  // when the store lacks it, image_corrupt when what it has is unusable,
  // other errors when it could not be asked.
  virtual void fetch(const std::string& key, const std::string& image_path,
                     std::function<void(Result<LayerDescription>)> done) = 0;
  // Puts a published layer into the store; answers the bytes sent. Does
  // nothing (and answers nothing) when this node does not upload.
  virtual void upload(LayerDescription description, unique_fd image, std::function<void(Result<uint64_t>)> done) = 0;
};

class LayerCache {
 public:
  using Callback = std::function<void(Result<std::shared_ptr<LayerGrant>>)>;

  // With `remote`, a layer the store lacks is fetched from there before a
  // build is tried, and every layer built here is uploaded. Answers come on
  // `loop`.
  LayerCache(uv_loop_t* loop, std::shared_ptr<LayerStore> store, LayerBuildFn build,
             std::unique_ptr<LayerRemote> remote = nullptr);
  // Checks in flight give their holds back; their requests get no answer.
  ~LayerCache();

  // The layer for `inputs`, from a later loop turn (unless no thread could
  // start): on a hit once its image's hash has been checked, otherwise
  // after the one fetch or build for its key; a request joins a check,
  // fetch or build of its key already running. A fetch that fails in any
  // way (missing, unreachable, a hash that differs) is followed by a build,
  // and so is a cached layer whose image is gone or differs from its hash
  // (it is removed first).
  void get(const LayerKeyInputs& inputs, Callback callback);
  // The cache, builds in progress included; with `drop`/`drop_all` first.
  Result<std::vector<LayerInfo>> list(const std::string& drop, bool drop_all);
  size_t building() const { return builds_.size(); }
  // Requests and builds counted since start, and the cache as it is now.
  LayerStats stats() const;

 private:
  struct Build {
    LayerKeyInputs inputs;
    std::vector<Callback> waiters;  // the first started it
    std::chrono::steady_clock::time_point started;
  };
  // A cached layer's image being hashed; the layer is held meanwhile.
  struct Check {
    LayerKeyInputs inputs;
    std::vector<Callback> waiters;
    std::string sha256;  // as recorded
    uint64_t generation = 0;
  };
  void check(const std::string& key, const LayerKeyInputs& inputs, Callback callback);
  void checked(const std::string& key, const unique_fd& image, Result<std::string> hash);
  // The cached layer is unusable (`why`): removed, and built for `c`'s requests.
  void rebuild(const std::string& key, Check c, const Error& why);
  void start(const std::string& key);
  void build(const std::string& key);
  void fetched(const std::string& key, Result<LayerDescription> d);
  void stored_fetch(const std::string& key, Result<LayerStore::Written> w);
  // The shared store could not give the layer: counted, then built here.
  void fall_back(const std::string& key, CacheFetch result, const Error& e);
  void finish(const std::string& key, Result<std::string> lock);
  void built(const std::string& key, Result<LayerStore::Written> w);
  void upload(const std::string& key);
  // The build ends: its waiters get the published layer, the first as
  // `how`, the rest joined.
  void grant_all(const std::string& key, LayerRequest how, const LayerStore::Written& w, uint64_t ms);
  Result<std::shared_ptr<LayerGrant>> grant(const std::string& key, const unique_fd& image, const std::string& sha256,
                                            std::string cache, uint64_t build_ms);
  // `work` on the offload's thread (here, when no thread could start), then
  // `then` with its result on the loop.
  template <class T>
  void off_loop(std::function<T(const std::atomic<bool>* stop)> work, std::function<void(T)> then);
  // Counts the answer, then gives it (every answer goes through here).
  void answer(const Callback& callback, Result<std::shared_ptr<LayerGrant>> g, LayerRequest how);

  std::shared_ptr<LayerStore> store_;
  LayerBuildFn build_;
  std::map<std::string, Build> builds_;
  std::map<std::string, Check> checks_;
  LayerStats stats_;
  // Last, the two whose answers reach the rest. Two threads: a check need
  // not wait behind another key's write-out (its fsync can take seconds).
  std::unique_ptr<LayerRemote> remote_;
  Offload hasher_;
};

}  // namespace sandbox::daemon
