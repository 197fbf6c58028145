#include "daemon/images.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "common/unique_fd.h"

namespace sandbox::daemon {

Result<std::string> sha256_file(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    auto e = Error::sys("open", path);
    e.code = errno == ENOENT ? ErrorCode::image_missing : ErrorCode::internal;
    return e;
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return Error::make(ErrorCode::internal, "SHA-256 unavailable");
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("read", path);
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 15]);
  }
  return hex;
}

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
    if (!actual) return std::move(actual).error();
    if (*actual != f->sha256)
      return Error::make(ErrorCode::image_corrupt, "'" + f->path + "' has SHA-256 " + *actual + ", the manifest says " + f->sha256);
  }
  return set;
}

}  // namespace sandbox::daemon
