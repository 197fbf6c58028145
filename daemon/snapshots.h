// The snapshot cache: per (language, memory) and a fingerprint of images,
// kernel, QEMU, accelerator and VM shape, the saved state of a VM that has
// booted and started its interpreter. New VMs restore from it instead of
// booting. Entries are written into a temp directory and renamed into place,
// verified by SHA-256 when the daemon starts, and evicted oldest-used first
// past the size limit.
//
// Layout: <dir>/<key>/{ram,state,meta}. `ram` is the guest memory (clones
// map it privately, so they share its pages); `state` is QEMU's device state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace sandbox::daemon {

class SnapshotStore {
 public:
  struct Entry {
    std::string key;
    std::string dir, ram, state;
    proto::Language language = proto::Language::python;
    uint32_t memory_mb = 0;
    uint64_t bytes = 0;  // allocated on disk
  };
  // A snapshot being written.
  struct Pending {
    std::string key;
    std::string dir, ram;
    unique_fd state;  // QEMU writes the device state here
    proto::Language language = proto::Language::python;
    uint32_t memory_mb = 0;
  };

  SnapshotStore(std::string dir, std::string fingerprint, uint64_t max_bytes);

  // Creates the directory, removes temp leftovers and entries whose hashes
  // or fingerprint do not match; returns what was dropped, for the log.
  Result<std::vector<std::string>> init();
  std::string key(proto::Language language, uint32_t memory_mb) const;
  std::optional<Entry> find(const std::string& key);
  Result<Pending> begin(proto::Language language, uint32_t memory_mb);
  Result<Entry> commit(Pending pending);
  void abort(Pending pending);
  void drop(const std::string& key);
  std::vector<Entry> list() const;

 private:
  void evict();

  std::string dir_;
  std::string fingerprint_;
  uint64_t max_bytes_;
};

// The parts of a VM's identity a snapshot depends on, as one hex digest.
std::string snapshot_fingerprint(const std::vector<std::string>& parts);

}  // namespace sandbox::daemon
