// The snapshot flow in one place: whether a new VM restores or boots, when
// a template VM is made and saved, and when a snapshot is given up.
//
//   plan()        a VM of (language, memory) is needed: a launch from the
//                 snapshot if the cache has one; else a boot, and a
//                 template is started beside it (room allowing) so that
//                 the next VM restores.
//   template VM   boots with its RAM in a memfd the store owns; once its
//                 interpreter waits, snapshot() saves the device state and
//                 the VM goes; a thread of the flow's own writes both into
//                 the cache (the loop never waits on the disk or the
//                 hashing: most of a second for 256 MB here), and the
//                 entry is published back on the loop.
//   restore_failed()
//                 a restored VM died before it was ready. The snapshot is
//                 dropped only when the restore itself failed (QEMU
//                 refused the state, exited, the migration failed): a host
//                 too loaded to finish within the boot deadline is slow,
//                 not broken, and the snapshot stays.
//   shared store  with a remote (snapshot_share.h), a node that lacks a
//                 template also fetches it in the background (one fetch
//                 per key at a time); if it arrives and checks out before
//                 the local template is saved, it is published like a
//                 save and the local template VM goes. Every template
//                 saved here is uploaded in the background. Nothing waits
//                 on the store.
// Snapshots are otherwise judged by their hashes (the store verifies them
// at start-up).
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "daemon/fleet.h"
#include "daemon/metrics.h"
#include "daemon/offload.h"
#include "daemon/snapshot_share.h"
#include "daemon/snapshots.h"

namespace sandbox::daemon {

// A package layer on the VM: snapshots of VMs with one are their own
// entries (keyed by its identity) and their templates attach it too.
struct SnapshotLayer {
  std::string identity;  // LayerGrant::identity
  int fd = -1;           // its image, verified (LayerGrant::fd)
  Language language = Language::python;
};

class SnapshotFlow {
 public:
  // `store` may be null: every VM boots.
  SnapshotFlow(uv_loop_t* loop, Fleet& fleet, SnapshotStore* store);
  ~SnapshotFlow() { stop(); }

  // How a new VM of `shape` starts; *how says "snapshot" or "boot".
  VmLaunch plan(const VmShape& shape, Language language, bool allow_restore, std::string* how,
                const SnapshotLayer* layer = nullptr);
  // A VM started from plan() as a restore failed before it was ready.
  void restore_failed(Language language, uint32_t memory_mb, const Error& e, const std::string& layer = {});
  // Starts a template for (language, memory[, layer]) unless there is a
  // snapshot, one is being made, or the fleet has no room.
  void maybe_make(Language language, uint32_t memory_mb, const SnapshotLayer* layer = nullptr);
  // Templates in flight are abandoned (shutdown).
  void stop();
  bool enabled() const { return store_ != nullptr; }
  // The nodes' shared store; set once, before the first plan().
  void set_remote(std::unique_ptr<SnapshotRemote> remote) { remote_ = std::move(remote); }
  const CacheShareStats& share_stats() const { return share_; }
  // VMs planned as restores, and restores that failed before ready.
  uint64_t restores() const { return restores_; }
  uint64_t fallbacks() const { return fallbacks_; }
  // The cache, emptied first when `drop`.
  std::vector<SnapshotInfo> list(bool drop);

 private:
  struct Template {
    std::unique_ptr<VmHandle> vm;
    std::shared_ptr<SnapshotStore::Pending> pending;
  };
  void template_ready(const std::string& key);
  void template_done(const std::string& key, Result<void> saved);
  void written(const std::string& key, Result<SnapshotStore::Written> w);
  void discard(const std::string& key, const std::string& what, const std::string& why);
  void maybe_fetch(const std::string& key, Language language, uint32_t memory_mb, const std::string& layer);
  void fetched(const std::string& key, Language language, uint32_t memory_mb, const std::string& layer,
               Result<SnapshotDescription> d);
  void upload(const SnapshotStore::Entry& entry);

  Fleet& fleet_;
  SnapshotStore* store_;
  std::map<std::string, Template> templates_;  // by snapshot key
  std::set<std::string> writing_;              // keys saved, being written out
  bool stopped_ = false;
  uint64_t restores_ = 0, fallbacks_ = 0;
  struct Fetch {
    std::string dir;  // the temp directory it writes into
    std::chrono::steady_clock::time_point started;
  };
  std::map<std::string, Fetch> fetches_;  // by snapshot key
  // Keys of templates this node fetched, and of those among them that a
  // restore condemned: the store's copy is not fetched again (this node
  // saves its own, and its upload replaces the store's).
  std::set<std::string> from_store_, no_fetch_;
  CacheShareStats share_;
  std::unique_ptr<SnapshotRemote> remote_;  // last two: their answers reach the rest
  std::unique_ptr<Offload> writer_;
};

// Whether a failed restore says the snapshot is bad (rather than the host slow).
bool restore_failure_condemns_snapshot(const Error& e);

}  // namespace sandbox::daemon
