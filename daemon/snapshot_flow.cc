#include "daemon/snapshot_flow.h"

#include <fcntl.h>

#include "daemon/log.h"

namespace sandbox::daemon {

bool restore_failure_condemns_snapshot(const Error& e) { return e.code != ErrorCode::timeout; }

namespace {

std::string describe(Language language, uint32_t memory_mb, const std::string& layer) {
  return std::string(language_name(language)) + "/" + std::to_string(memory_mb) + " MB" +
         (layer.empty() ? "" : " with layer " + layer.substr(0, layer.find(':')));
}

}  // namespace

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
  if (!store_ || stopped_ || !fleet_.has_room()) return;
  std::string id = layer ? layer->identity : std::string();
  std::string key = store_->key(language, memory_mb, id);
  if (templates_.count(key) || store_->find(key)) return;
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
  auto entry = store_->commit(std::move(*t.pending));
  if (entry)
    log_info("snapshot ready: " + describe(entry->language, entry->memory_mb, entry->layer) + ", " +
             std::to_string(entry->bytes >> 20) + " MB on disk");
  else
    log_warning("cannot store a snapshot: " + entry.error().describe());
}

void SnapshotFlow::stop() {
  stopped_ = true;
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
