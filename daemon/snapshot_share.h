// Snapshot templates shared between nodes through the store package
// layers use (layer_share.h, F27). A node that lacks a template starts
// fetching it in the background while it boots and saves its own as
// before (SnapshotFlow); a node that saved one puts it there. The
// template key covers everything a template depends on (QEMU, machine,
// CPU, images, VM shape: see main.cc's open_snapshots), so equal keys on
// two nodes mean templates either can restore.
//
// Objects, below the store URL's prefix:
//   snapshots/<key>.state[.zst]  QEMU's device state
//   snapshots/<key>.ram[.zst]    the guest's memory (mostly zeros: zstd)
//   snapshots/<key>.snapshot     the description (snapshot_description.h),
//                                put last: a template is in the store once
//                                its description is.
// What comes back is checked: the description parsed strictly, every
// object and every decompressed file bounded by its description and
// cache_store_max_mb, each file's SHA-256 compared; the flow then checks
// the key and fingerprint against its own before publishing.
#pragma once

#include <memory>

#include "daemon/layer_share.h"
#include "daemon/object_store.h"
#include "daemon/offload.h"
#include "daemon/snapshot_description.h"

namespace sandbox::daemon {

// The store as the snapshot flow sees it (a fake in unit tests).
class SnapshotRemote {
 public:
  virtual ~SnapshotRemote() = default;
  // Writes template `key`'s `state` and `ram` into `dir` (an empty temp
  // directory) and answers its description, each file's hash checked.
  // not_found when the store lacks it, image_corrupt when what it has is
  // unusable, other errors when it could not be asked. On an error `dir`
  // is left empty.
  virtual void fetch(const std::string& key, const std::string& dir,
                     std::function<void(Result<SnapshotDescription>)> done) = 0;
  // Puts a saved template (its files open read-only) into the store;
  // answers the bytes sent. Does nothing when this node does not upload.
  virtual void upload(SnapshotDescription description, unique_fd state, unique_fd ram,
                      std::function<void(Result<uint64_t>)> done) = 0;
};

class SnapshotShare : public SnapshotRemote, private StoreTransfers {
 public:
  // The store, upload switch and size bound layers use.
  SnapshotShare(uv_loop_t* loop, LayerShareOptions options);

  void fetch(const std::string& key, const std::string& dir,
             std::function<void(Result<SnapshotDescription>)> done) override;
  void upload(SnapshotDescription description, unique_fd state, unique_fd ram,
              std::function<void(Result<uint64_t>)> done) override;
};

// The object names of template `key` below the store's prefix.
std::string snapshot_description_object(const std::string& key);
std::string snapshot_file_object(const std::string& key, const std::string& file, SnapshotEncoding encoding);

// The pieces a transfer is made of, on a worker thread (tested alone).
// `in` read from offset 0 for `size` bytes into `out` (empty, at offset 0),
// compressed; nullopt when it does not pay (over 9/10 of `size`).
// `*sha256`: the compressed bytes'.
Result<std::optional<uint64_t>> zstd_compress_fd(int in, uint64_t size, int out, std::string* sha256,
                                                 const std::atomic<bool>& stop);
// `in` (a zstd frame, `in_size` bytes) decompressed into `out`, which must
// come to exactly `bytes` bytes; all-zero pages stay holes. Answers the
// SHA-256 of what was written; image_corrupt for a bad frame or size.
Result<std::string> zstd_decompress_fd(int in, uint64_t in_size, int out, uint64_t bytes,
                                       const std::atomic<bool>& stop);

}  // namespace sandbox::daemon
