#include "daemon/layer_share.h"

#include <fcntl.h>
#include <unistd.h>

namespace sandbox::daemon {
namespace {

// On a worker: the description, then the image into `path`, both bounded.
Result<LayerDescription> fetch_now(const ObjectStore& store, const std::string& key, const std::string& path,
                                   uint64_t max_bytes, const std::atomic<bool>& stop) {
  auto text = store.get(layer_description_object(key), kMaxLayerDescriptionBytes, stop);
  if (!text) return std::move(text).error();
  auto d = parse_layer_description(key, *text);
  if (!d) return std::move(d).error();
  if (d->info.bytes > max_bytes)
    return Error::make(ErrorCode::capacity, "layer " + key + " is " + std::to_string(d->info.bytes) +
                                                " bytes, over cache_store_max_mb");
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return Error::sys("open", path);
  auto got = store.get_to_fd(layer_image_object(key), fd.get(), d->info.bytes, stop);
  if (!got) {
    // More than the description says is not this layer.
    if (got.error().code == ErrorCode::capacity)
      return Error::make(ErrorCode::image_corrupt, "layer " + key + ": the image is larger than its description says");
    return std::move(got).error();
  }
  if (*got != d->info.bytes)
    return Error::make(ErrorCode::image_corrupt, "layer " + key + ": the image is " + std::to_string(*got) +
                                                     " bytes, its description says " + std::to_string(d->info.bytes));
  return d;
}

}  // namespace

std::string layer_image_object(const std::string& key) { return "layers/" + key + ".erofs"; }
std::string layer_description_object(const std::string& key) { return "layers/" + key + ".layer"; }

StoreTransfers::StoreTransfers(uv_loop_t* loop, LayerShareOptions options)
    : store_(std::make_shared<ObjectStore>(options.store)), options_(std::move(options)), offload_(loop, kThreads) {}

LayerShare::LayerShare(uv_loop_t* loop, LayerShareOptions options) : StoreTransfers(loop, std::move(options)) {}

void LayerShare::fetch(const std::string& key, const std::string& image_path,
                       std::function<void(Result<LayerDescription>)> done) {
  transfer<LayerDescription>(
      [key, image_path, max = options_.max_image_bytes](const ObjectStore& store, const std::atomic<bool>& stop) {
        return fetch_now(store, key, image_path, max, stop);
      },
      std::move(done));
}

void LayerShare::upload(LayerDescription description, unique_fd image, std::function<void(Result<uint64_t>)> done) {
  if (!options_.upload) return;
  auto fd = std::make_shared<unique_fd>(std::move(image));
  transfer<uint64_t>(
      [d = std::move(description), fd](const ObjectStore& store, const std::atomic<bool>& stop) -> Result<uint64_t> {
        if (auto r = store.put_fd(layer_image_object(d.info.key), fd->get(), d.info.bytes, d.sha256, stop); !r)
          return std::move(r).error();
        if (auto m = store.put(layer_description_object(d.info.key), format_layer_description(d), stop); !m)
          return std::move(m).error();
        return d.info.bytes;
      },
      std::move(done));
}

}  // namespace sandbox::daemon
