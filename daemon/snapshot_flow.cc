#include "daemon/snapshot_flow.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "daemon/log.h"

namespace sandbox::daemon {

bool restore_failure_condemns_snapshot(const Error& e) { return e.code != ErrorCode::timeout; }

namespace {

std::string describe(Language language, uint32_t memory_mb, const std::string& layer) {
  return std::string(language_name(language)) + "/" + std::to_string(memory_mb) + " MB" +
         (layer.empty() ? "" : " with layer " + layer.substr(0, layer.find(':')));
}

}  // namespace

SnapshotFlow::SnapshotFlow(uv_loop_t* loop, Fleet& fleet, SnapshotStore* store) : fleet_(fleet), store_(store) {
  if (store_) writer_ = std::make_unique<Offload>(loop, 1);
}

VmLaunch SnapshotFlow::plan(const VmShape& shape, Language language, bool allow_restore, std::string* how,
                            const SnapshotLayer* layer) {
  VmLaunch launch;
  launch.shape = shape;
  *how = "boot";
  std::string id = layer ? layer->identity : std::string();
  if (store_ && allow_restore) {
    if (auto entry = store_->find(store_->key(language, shape.memory_mb, id))) {
      unique_fd state(::open(entry->state.c_str(), O_RDONLY | O_CLOEXEC));
      auto ram = store_->clone_ram(*entry);
      if (state && ram) {
        launch.restore = VmLaunch::Snapshot{std::move(state), *ram};
        *how = "snapshot";
        ++restores_;
        return launch;
      }
      discard(entry->key, describe(language, shape.memory_mb, id),
              "its files could not be used (" + (ram ? Error::sys("open", entry->state) : ram.error()).message + ")");
    }
  }
  maybe_make(language, shape.memory_mb, layer);
  return launch;
}

void SnapshotFlow::restore_failed(Language language, uint32_t memory_mb, const Error& e, const std::string& layer) {
  ++fallbacks_;
  if (!store_) return;
  if (restore_failure_condemns_snapshot(e)) {
    if (auto key = store_->key(language, memory_mb, layer); from_store_.count(key)) no_fetch_.insert(key);
    discard(store_->key(language, memory_mb, layer), describe(language, memory_mb, layer),
            "a restore failed: " + e.message.substr(0, 200));
    return;
  }
  log_warning("a " + describe(language, memory_mb, layer) + " VM restored from its snapshot missed the boot deadline; "
              "the host is slow, the snapshot stays");
}

void SnapshotFlow::discard(const std::string& key, const std::string& what, const std::string& why) {
  if (!store_) return;
  log_warning("snapshot for " + what + " discarded: " + why);
  store_->drop(key);
}

void SnapshotFlow::maybe_make(Language language, uint32_t memory_mb, const SnapshotLayer* layer) {
  if (!store_ || stopped_) return;
  std::string id = layer ? layer->identity : std::string();
  std::string key = store_->key(language, memory_mb, id);
  if (templates_.count(key) || writing_.count(key) || store_->find(key)) return;
  // The store is asked whether or not a template can be made here now.
  maybe_fetch(key, language, memory_mb, id);
  if (!fleet_.has_room()) return;
  auto pending = store_->begin(language, memory_mb, id);
  if (!pending) {
    log_warning("cannot start a snapshot: " + pending.error().describe());
    return;
  }
  auto shared = std::make_shared<SnapshotStore::Pending>(std::move(*pending));
  // A template never runs user code: it boots with its interpreter waiting,
  // is saved, and goes.
  VmLaunch launch;
  launch.shape.memory_mb = memory_mb;
  launch.shape.prestart = language;
  // The template attaches the layer like its clones will.
  if (layer) {
    launch.shape.layer_fd = layer->fd;
    launch.shape.layer = layer->language;
  }
  unique_fd state(::fcntl(shared->state.get(), F_DUPFD_CLOEXEC, 0));
  launch.make_template = VmLaunch::Snapshot{std::move(state), shared->ram_fd.get()};
  VmEvents ev;
  ev.ready = [this, key] { template_ready(key); };
  ev.failed = [this, key](Error e) {
    log_warning("snapshot template failed: " + e.describe().substr(0, 300));
    template_done(key, std::move(e));
  };
  auto vm = fleet_.start(std::move(launch), std::move(ev));
  if (!vm) {
    log_warning("cannot start a snapshot template: " + vm.error().describe());
    store_->abort(std::move(*shared));
    return;
  }
  templates_.emplace(key, Template{std::move(*vm), shared});
}

void SnapshotFlow::template_ready(const std::string& key) {
  auto it = templates_.find(key);
  if (it == templates_.end()) return;
  it->second.vm->snapshot([this, key](Result<void> r) { template_done(key, std::move(r)); });
}

void SnapshotFlow::template_done(const std::string& key, Result<void> saved) {
  auto it = templates_.find(key);
  if (it == templates_.end()) return;
  auto t = std::move(it->second);
  templates_.erase(it);
  fleet_.release(std::move(t.vm));
  if (!saved) {
    store_->abort(std::move(*t.pending));
    return;
  }
  if (store_->find(key)) {  // fetched from the shared store meanwhile
    store_->abort(std::move(*t.pending));
    return;
  }
  writing_.insert(key);
  auto pending = t.pending;
  bool posted = writer_->post([this, key, pending](const std::atomic<bool>& stop) -> std::function<void()> {
    auto w = std::make_shared<Result<SnapshotStore::Written>>(SnapshotStore::write_out(std::move(*pending), &stop));
    return [this, key, w] { written(key, std::move(*w)); };
  });
  // No thread could start: written here, the loop waiting on it.
  if (!posted) written(key, SnapshotStore::write_out(std::move(*pending)));
}

void SnapshotFlow::written(const std::string& key, Result<SnapshotStore::Written> w) {
  writing_.erase(key);
  if (!w) {
    log_warning("cannot store a snapshot: " + w.error().describe());
    return;
  }
  if (store_->find(key)) {  // fetched from the shared store meanwhile
    store_->abort_written(*w);
    return;
  }
  auto entry = store_->publish(std::move(*w));
  if (!entry) {
    log_warning("cannot store a snapshot: " + entry.error().describe());
    return;
  }
  log_info("snapshot ready: " + describe(entry->language, entry->memory_mb, entry->layer) + ", " +
           std::to_string(entry->bytes >> 20) + " MB on disk");
  // Kept when it lands during a drain (a rename); shared only while running.
  if (!stopped_) upload(*entry);
}

void SnapshotFlow::maybe_fetch(const std::string& key, Language language, uint32_t memory_mb,
                               const std::string& layer) {
  if (!remote_ || fetches_.count(key) || no_fetch_.count(key)) return;
  auto dir = store_->begin_fetch(key);
  if (!dir) {
    log_warning("cannot fetch a snapshot: " + dir.error().describe());
    return;
  }
  fetches_.emplace(key, Fetch{*dir, std::chrono::steady_clock::now()});
  remote_->fetch(key, *dir, [this, key, language, memory_mb, layer](Result<SnapshotDescription> d) {
    fetched(key, language, memory_mb, layer, std::move(d));
  });
}

void SnapshotFlow::fetched(const std::string& key, Language language, uint32_t memory_mb, const std::string& layer,
                           Result<SnapshotDescription> d) {
  auto it = fetches_.find(key);
  if (it == fetches_.end()) return;
  std::string dir = std::move(it->second.dir);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  it->second.started).count();
  fetches_.erase(it);
  std::string what = describe(language, memory_mb, layer);
  auto refuse = [&](CacheFetch result, const std::string& why) {
    ++share_.fetches[static_cast<size_t>(result)];
    if (result != CacheFetch::miss)
      log_warning("snapshot for " + what + " from the shared store: " + why + "; this node saves its own");
    store_->abort_fetch(dir);
  };
  if (stopped_) return store_->abort_fetch(dir);
  if (!d) return refuse(cache_fetch_of(d.error()), d.error().message);
  // Made for another host, QEMU, image set or VM shape: the key would differ.
  if (d->fingerprint != store_->fingerprint() || d->language != language || d->memory_mb != memory_mb ||
      d->layer != layer || store_->key(d->language, d->memory_mb, d->layer) != key)
    return refuse(CacheFetch::corrupt, "its description is not of this key");
  auto entry = store_->adopt(dir, *d);
  if (!entry) return refuse(CacheFetch::error, entry.error().describe());
  ++share_.fetches[static_cast<size_t>(CacheFetch::hit)];
  from_store_.insert(key);
  share_.fetch_bytes += d->state.stored_bytes + d->ram.stored_bytes;
  log_info("snapshot fetched from the shared store: " + what + ", " +
           std::to_string(d->state.stored_bytes + d->ram.stored_bytes) + " bytes in " + std::to_string(ms) + " ms");
  // The local template is no longer needed.
  if (auto t = templates_.find(key); t != templates_.end()) {
    auto doomed = std::move(t->second);
    templates_.erase(t);
    fleet_.release(std::move(doomed.vm));
    store_->abort(std::move(*doomed.pending));
  }
}

void SnapshotFlow::upload(const SnapshotStore::Entry& entry) {
  if (!remote_) return;
  unique_fd state(::open(entry.state.c_str(), O_RDONLY | O_CLOEXEC));
  unique_fd ram(::open(entry.ram.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st{};
  if (!state || !ram || ::fstat(state.get(), &st) != 0) {
    log_warning("snapshot " + entry.key + " not uploaded: " + Error::sys("open", entry.dir).describe());
    return;
  }
  SnapshotDescription d;
  d.key = entry.key;
  d.fingerprint = store_->fingerprint();
  d.language = entry.language;
  d.memory_mb = entry.memory_mb;
  d.layer = entry.layer;
  d.state.bytes = static_cast<uint64_t>(st.st_size);
  d.state.sha256 = entry.state_sha256;
  d.ram.bytes = uint64_t{entry.memory_mb} << 20;
  d.ram.sha256 = entry.ram_sha256;
  std::string key = entry.key;
  remote_->upload(std::move(d), std::move(state), std::move(ram), [this, key](Result<uint64_t> sent) {
    if (!sent) {
      ++share_.uploads[1];
      log_warning("snapshot " + key + " not uploaded to the shared store: " + sent.error().describe());
      return;
    }
    ++share_.uploads[0];
    share_.upload_bytes += *sent;
    log_info("snapshot " + key + " uploaded to the shared store (" + std::to_string(*sent) + " bytes)");
  });
}

void SnapshotFlow::stop() {
  stopped_ = true;
  // Fetches in flight end as they may; what they leave goes when they
  // answer, or at the next start-up.
  for (auto& [key, t] : templates_) {
    fleet_.release(std::move(t.vm));
    if (store_) store_->abort(std::move(*t.pending));
  }
  templates_.clear();
}

std::vector<SnapshotInfo> SnapshotFlow::list(bool drop) {
  std::vector<SnapshotInfo> out;
  if (!store_) return out;
  auto entries = store_->list();
  if (drop) {
    for (const auto& e : entries) store_->drop(e.key);
    log_info("snapshot cache emptied (" + std::to_string(entries.size()) + " snapshots)");
    entries.clear();
  }
  for (const auto& e : entries) out.push_back({e.key, e.language, e.memory_mb, e.bytes});
  return out;
}

}  // namespace sandbox::daemon
