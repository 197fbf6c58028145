#include "daemon/images.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "common/unique_fd.h"
#include "daemon/digest.h"

namespace sandbox::daemon {

Result<ImageSet> load_images(const std::string& images_dir) {
  // QEMU gets absolute paths, whatever the daemon's working directory.
  char* real = ::realpath(images_dir.c_str(), nullptr);
  if (!real)
    return Error::make(ErrorCode::image_missing, "images directory '" + images_dir + "': " + std::strerror(errno));
  std::string dir(real);
  ::free(real);
  std::string manifest_path = dir + "/manifest";
  std::ifstream in(manifest_path);
  if (!in)
    return Error::make(ErrorCode::image_missing,
                       "no image manifest at '" + manifest_path + "' (build the images with images/build.sh)");
  ImageSet set;
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("#")) {
      set.description = line.substr(line.find_first_not_of("# "));
      continue;
    }
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string hash, role, file;
    if (!(fields >> hash >> role >> file) || hash.size() != 64 || file.find('/') != std::string::npos)
      return Error::make(ErrorCode::image_corrupt, "malformed line in '" + manifest_path + "': " + line);
    ImageFile* slot = role == "kernel" ? &set.kernel : role == "initrd" ? &set.initrd : role == "rootfs" ? &set.rootfs : nullptr;
    if (!slot) return Error::make(ErrorCode::image_corrupt, "unknown image role '" + role + "' in '" + manifest_path + "'");
    *slot = {dir + "/" + file, hash};
  }
  for (ImageFile* f : {&set.kernel, &set.initrd, &set.rootfs}) {
    if (f->path.empty()) return Error::make(ErrorCode::image_corrupt, "'" + manifest_path + "' does not list all of kernel, initrd, rootfs");
    auto actual = sha256_file(f->path);
    if (!actual) {
      auto e = std::move(actual).error();
      e.code = e.sys_errno == ENOENT ? ErrorCode::image_missing : ErrorCode::internal;
      return e;
    }
    if (*actual != f->sha256)
      return Error::make(ErrorCode::image_corrupt, "'" + f->path + "' has SHA-256 " + *actual + ", the manifest says " + f->sha256);
  }
  return set;
}

}  // namespace sandbox::daemon
