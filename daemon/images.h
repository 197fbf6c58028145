// The guest images the daemon boots, found through a manifest in the images
// directory and verified by SHA-256 before use.
#pragma once

#include <string>

#include <sandbox/result.h>

namespace sandbox::daemon {

struct ImageFile {
  std::string path;
  std::string sha256;
};

struct ImageSet {
  ImageFile kernel;  // uncompressed vmlinux (PVH entry)
  ImageFile initrd;  // agent + modules
  ImageFile rootfs;  // read-only root
  std::string description;  // the manifest's comment line
};

// Reads `dir`/manifest and hashes every file it names: image_missing when a
// file or the manifest is absent, image_corrupt when a hash differs.
Result<ImageSet> load_images(const std::string& dir);

}  // namespace sandbox::daemon
