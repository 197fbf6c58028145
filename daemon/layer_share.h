// Package layers shared between nodes through an S3-compatible object
// store (F27). A node that lacks a layer looks in the store before it
// builds; a node that built one puts it there. The layer key already
// names everything that decides a layer's contents (layers.h), so equal
// keys on two nodes mean the same layer.
//
// Objects, below the store URL's prefix:
//   layers/<key>.erofs   the image
//   layers/<key>.layer   its description (layers.h), with the image's
//                        SHA-256; put after the image, so a layer is in
//                        the store once its description is.
// What comes back is checked: the description parsed strictly, the image
// no larger than it says nor than the node's bound, its hash compared
// before it is published (by LayerCache) like a local build.
#pragma once

#include <memory>

#include "daemon/layers.h"
#include "daemon/object_store.h"
#include "daemon/offload.h"

namespace sandbox::daemon {

struct LayerShareOptions {
  ObjectStoreOptions store;
  bool upload = true;
  uint64_t max_image_bytes = uint64_t{2048} << 20;
};

// What each kind of shared object (layers, snapshot templates) transfers
// with: the store client, the operator's options, and threads of its own.
class StoreTransfers {
 protected:
  StoreTransfers(uv_loop_t* loop, LayerShareOptions options);
  // Runs `job` on a transfer thread and `done` with its answer on the
  // loop; an internal error at once when no thread can take it.
  template <typename T>
  void transfer(std::function<Result<T>(const ObjectStore&, const std::atomic<bool>& stop)> job,
                std::function<void(Result<T>)> done) {
    auto posted = offload_.post([store = store_, job = std::move(job), done](const std::atomic<bool>& stop)
                                    -> std::function<void()> {
      auto r = std::make_shared<Result<T>>(job(*store, stop));
      return [done, r] { done(std::move(*r)); };
    });
    if (!posted) done(Error::make(ErrorCode::internal, "no thread for transfers"));
  }

  std::shared_ptr<const ObjectStore> store_;
  LayerShareOptions options_;

 private:
  // Transfers at once: one fetch need not wait behind one upload.
  static constexpr size_t kThreads = 2;
  Offload offload_;  // last: its threads use the rest
};

class LayerShare : public LayerRemote, private StoreTransfers {
 public:
  LayerShare(uv_loop_t* loop, LayerShareOptions options);

  void fetch(const std::string& key, const std::string& image_path,
             std::function<void(Result<LayerDescription>)> done) override;
  void upload(LayerDescription description, unique_fd image, std::function<void(Result<uint64_t>)> done) override;
};

// The object names of layer `key` below the store's prefix.
std::string layer_image_object(const std::string& key);
std::string layer_description_object(const std::string& key);

}  // namespace sandbox::daemon
