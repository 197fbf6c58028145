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

LayerShare::LayerShare(uv_loop_t* loop, LayerShareOptions options)
    : store_(std::make_shared<ObjectStore>(options.store)), options_(std::move(options)), offload_(loop, kThreads) {}

void LayerShare::fetch(const std::string& key, const std::string& image_path,
                       std::function<void(Result<LayerDescription>)> done) {
  auto posted = offload_.post([store = store_, key, image_path, max = options_.max_image_bytes,
                               done](const std::atomic<bool>& stop) -> std::function<void()> {
    auto d = std::make_shared<Result<LayerDescription>>(fetch_now(*store, key, image_path, max, stop));
    return [done, d] { done(std::move(*d)); };
  });
  if (!posted) done(Error::make(ErrorCode::internal, "no thread for transfers"));
}

void LayerShare::upload(LayerDescription description, unique_fd image, std::function<void(Result<uint64_t>)> done) {
  if (!options_.upload) return;
  auto fd = std::make_shared<unique_fd>(std::move(image));
  auto posted = offload_.post([store = store_, d = std::move(description), fd,
                               done](const std::atomic<bool>& stop) -> std::function<void()> {
    auto sent = std::make_shared<Result<uint64_t>>(d.info.bytes);
    if (auto r = store->put_fd(layer_image_object(d.info.key), fd->get(), d.info.bytes, d.sha256, stop); !r)
      *sent = std::move(r).error();
    else if (auto m = store->put(layer_description_object(d.info.key), format_layer_description(d), stop); !m)
      *sent = std::move(m).error();
    return [done, sent] { done(std::move(*sent)); };
  });
  if (!posted) done(Error::make(ErrorCode::internal, "no thread for transfers"));
}

}  // namespace sandbox::daemon
