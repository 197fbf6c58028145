// The snapshot cache: per (language, memory) and a fingerprint of images,
// kernel, QEMU, accelerator and VM shape, the saved state of a VM that has
// booted and started its interpreter. New VMs restore from it instead of
// booting. Entries are written into a temp directory and renamed into place,
// verified by SHA-256 when the daemon starts, and evicted oldest-used first
// past the size limit.
//
// Layout: <dir>/<key>/{ram,state,meta}. `ram` is the guest memory, `state`
// QEMU's device state.
//
// No QEMU ever gets write access to a stored snapshot: a template VM writes
// its RAM into a memfd, which the daemon copies to `ram`; clones get the RAM
// as a sealed memfd (F_SEAL_WRITE and friends), which they map privately and
// copy-on-write, so they share its pages and none can change it for the next.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol.h"
#include <sandbox/result.h>
#include "common/unique_fd.h"
#include "daemon/snapshot_description.h"

namespace sandbox::daemon {

class SnapshotStore {
 public:
  struct Entry {
    std::string key;
    std::string dir, ram, state;
    Language language = Language::python;
    uint32_t memory_mb = 0;
    std::string layer;   // the package layer's identity, empty for none
    uint64_t bytes = 0;  // allocated on disk
    std::string state_sha256, ram_sha256;  // as recorded when it was saved
  };
  // A snapshot being written.
  struct Pending {
    std::string key;
    std::string dir, ram;
    unique_fd ram_fd;  // the template's RAM (a memfd), copied to `ram` by write_out()
    unique_fd state;  // QEMU writes the device state here
    Language language = Language::python;
    uint32_t memory_mb = 0;
    std::string layer;
  };

  SnapshotStore(std::string dir, std::string fingerprint, uint64_t max_bytes);

  // Creates the directory, removes temp leftovers and entries whose hashes
  // or fingerprint do not match; returns what was dropped, for the log.
  Result<std::vector<std::string>> init();
  // `layer`: a package layer's identity (LayerGrant::identity) when the VM
  // has one attached; its snapshot is another entry.
  std::string key(Language language, uint32_t memory_mb, const std::string& layer = {}) const;
  std::optional<Entry> find(const std::string& key);
  Result<Pending> begin(Language language, uint32_t memory_mb, const std::string& layer = {});
  void abort(Pending pending);
  // A saved template written out but not yet an entry.
  struct Written {
    std::string key, dir;
    Language language = Language::python;
    uint32_t memory_mb = 0;
    std::string layer;
    std::string state_sha256, ram_sha256;
    // What clone_ram() would load, loaded already (and kept from then on,
    // like one loaded at a first restore).
    unique_fd sealed_ram;
  };
  // The slow part of storing a saved template (seconds of disk and hashing
  // for a large guest): both files synced, the RAM copied out of its memfd
  // and loaded for clones, both hashed. It touches only the pending entry's
  // own files and no member, so it may run on another thread than the
  // store's; it gives up between steps once `stop` is set. On failure the
  // temp directory is gone. publish() then makes it an entry, on the
  // store's thread; abort_written() removes it instead.
  static Result<Written> write_out(Pending pending, const std::atomic<bool>* stop = nullptr);
  Result<Entry> publish(Written written);
  void abort_written(const Written& written);
  // A template from the nodes' shared store: fetched into a temp directory
  // (begin_fetch; start-up removes it if the daemon dies first), then
  // published like a saved one once its files are checked. An entry saved here
  // meanwhile stays, and the fetched one goes.
  Result<std::string> begin_fetch(const std::string& key);
  Result<Entry> adopt(const std::string& dir, const SnapshotDescription& d);
  void abort_fetch(const std::string& dir);
  const std::string& fingerprint() const { return fingerprint_; }
  void drop(const std::string& key);
  // The entry's RAM as a sealed memfd, loaded once and shared by clones.
  Result<int> clone_ram(const Entry& entry);
  std::vector<Entry> list() const;

 private:
  void evict();
  // Writes the meta file into `tmp_dir` and renames it to the entry `key`.
  Result<Entry> publish(const std::string& tmp_dir, const std::string& key, Language language, uint32_t memory_mb,
                        const std::string& layer, const std::string& state_sha, const std::string& ram_sha);
  std::map<std::string, unique_fd> sealed_;

  std::string dir_;
  std::string fingerprint_;
  uint64_t max_bytes_;
};

// The parts of a VM's identity a snapshot depends on, as one hex digest.
std::string snapshot_fingerprint(const std::vector<std::string>& parts);

}  // namespace sandbox::daemon
