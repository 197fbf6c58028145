#include "daemon/images.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "common/io.h"
#include "common/protocol.h"
#include "daemon/digest.h"

namespace sandbox::daemon {
namespace {

// The manifest is a few short lines; the package list about 200 of them.
constexpr size_t kMaxManifestBytes = 64 << 10;
constexpr size_t kMaxPackageListBytes = proto::kMaxPackageEntries * 2 * limits::kMaxNameBytes;

// What `sandboxctl images` names, in this order: the interpreters runs use,
// then the everyday tools images/build.sh installs (GUEST_TOOLS) and what
// they stand on, then what the builder's root adds (BUILDER_PACKAGES):
// pip's, npm's and apt's versions go into the keys of the layers they
// install.
// Each is looked up in the root's package list, then in the builder's; one
// in neither is left out. "python3.*" is the versioned interpreter package
// (python3.11), whose version carries Debian's security updates; the
// "python3" package only points at it.
struct ToolPackage {
  std::string_view tool;
  std::string_view package;
};
constexpr ToolPackage kTools[] = {
    {"python3", "python3.*"}, {"nodejs", "nodejs"},   {"bash", "bash"},
    {"perl", "perl"},         {"git", "git"},         {"curl", "curl"},
    {"jq", "jq"},             {"sqlite3", "sqlite3"}, {"zip", "zip"},
    {"unzip", "unzip"},       {"file", "file"},       {"less", "less"},
    {"patch", "patch"},       {"procps", "procps"},   {"xz-utils", "xz-utils"},
    {"bzip2", "bzip2"},       {"tzdata", "tzdata"},   {"ca-certificates", "ca-certificates"},
    {"openssl", "openssl"},   {"python3-venv", "python3.*-venv"},
    {"pip", "python3-pip"},   {"npm", "npm"},         {"mkfs.erofs", "erofs-utils"},
    {"apt", "apt"},
};
static_assert(std::size(kTools) <= proto::kMaxToolEntries);

// "python3.*" matches python3.11; "python3.*-venv" matches python3.11-venv.
bool package_matches(std::string_view pattern, std::string_view name) {
  auto star = pattern.find('*');
  if (star == std::string_view::npos) return pattern == name;
  auto head = pattern.substr(0, star), tail = pattern.substr(star + 1);
  if (name.size() <= head.size() + tail.size() || !name.starts_with(head) || !name.ends_with(tail)) return false;
  auto middle = name.substr(head.size(), name.size() - head.size() - tail.size());
  return std::all_of(middle.begin(), middle.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Debian package names, versions and kernel releases: no spaces, quotes or
// control characters, whatever the file says.
bool is_token(std::string_view s) {
  if (s.empty() || s.size() > limits::kMaxNameBytes) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::strchr(".+-~:_", c) != nullptr;
  });
}

Error corrupt(std::string message) { return Error::make(ErrorCode::image_corrupt, std::move(message)); }

// Hashes a file the manifest names, without reading it into memory: the
// images are hundreds of megabytes.
Result<void> verify_image(const ImageFile& f) {
  auto actual = sha256_file(f.path);
  if (!actual) {
    auto e = std::move(actual).error();
    e.code = e.sys_errno == ENOENT ? ErrorCode::image_missing : ErrorCode::internal;
    return e;
  }
  if (*actual != f.sha256)
    return corrupt("'" + f.path + "' has SHA-256 " + *actual + ", the manifest says " + f.sha256);
  return {};
}

// A file the manifest names, read whole and hashed; the error says which.
Result<std::string> read_verified(const ImageFile& f, size_t max) {
  auto text = read_file(f.path, max);
  if (!text) {
    auto e = std::move(text).error();
    e.code = e.sys_errno == ENOENT ? ErrorCode::image_missing : ErrorCode::image_corrupt;
    return e;
  }
  if (auto actual = sha256_hex(*text); actual != f.sha256)
    return corrupt("'" + f.path + "' has SHA-256 " + actual + ", the manifest says " + f.sha256);
  return text;
}

}  // namespace

Result<std::vector<PackageInfo>> parse_package_list(std::string_view text) {
  std::vector<PackageInfo> out;
  size_t line_no = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (line.empty()) continue;
    auto eq = line.find('=');
    if (eq == std::string_view::npos || !is_token(line.substr(0, eq)) || !is_token(line.substr(eq + 1)))
      return corrupt("package list line " + std::to_string(line_no) + " is not 'name=version'");
    if (out.size() == proto::kMaxPackageEntries)
      return corrupt("package list has more than " + std::to_string(proto::kMaxPackageEntries) + " entries");
    out.push_back({std::string(line.substr(0, eq)), std::string(line.substr(eq + 1))});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

Result<ImageSet> load_images(const std::string& images_dir) {
  // QEMU gets absolute paths, whatever the daemon's working directory.
  char* real = ::realpath(images_dir.c_str(), nullptr);
  if (!real)
    return Error::make(ErrorCode::image_missing, "images directory '" + images_dir + "': " + std::strerror(errno));
  std::string dir(real);
  ::free(real);
  std::string manifest_path = dir + "/manifest";
  auto manifest = read_file(manifest_path, kMaxManifestBytes);
  if (!manifest) {
    if (manifest.error().sys_errno == ENOENT)
      return Error::make(ErrorCode::image_missing,
                         "no image manifest at '" + manifest_path + "' (build the images with images/build.sh)");
    auto e = std::move(manifest).error();
    e.code = ErrorCode::image_corrupt;
    return e;
  }
  ImageSet set;
  set.dir = dir;
  std::istringstream in(*manifest);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("#")) {
      auto start = line.find_first_not_of("# ");
      set.description = start == std::string::npos ? "" : line.substr(start);
      continue;
    }
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string hash, role, file, release, flag, extra;
    if (!(fields >> hash >> role >> file) || hash.size() != proto::kSha256HexBytes ||
        file.find('/') != std::string::npos || file.size() > limits::kMaxPathBytes)
      return corrupt("malformed line in '" + manifest_path + "': " + line);
    ImageFile* slot = role == "kernel"             ? &set.kernel
                      : role == "initrd"           ? &set.initrd
                      : role == "rootfs"           ? &set.rootfs
                      : role == "packages"         ? &set.packages
                      : role == "builder"          ? &set.builder
                      : role == "builder_packages" ? &set.builder_packages
                                                   : nullptr;
    if (!slot) return corrupt("unknown image role '" + role + "' in '" + manifest_path + "'");
    // Only the kernel's line has more columns: its release, then "noacpi"
    // for a kernel that finds its devices on the command line.
    if (fields >> release) {
      if (role != "kernel" || !is_token(release)) return corrupt("malformed line in '" + manifest_path + "': " + line);
      set.kernel_release = release;
      if (fields >> flag) {
        if (flag != "noacpi" || (fields >> extra))
          return corrupt("malformed line in '" + manifest_path + "': " + line);
        set.kernel_acpi = false;
      }
    }
    *slot = {dir + "/" + file, hash};
  }
  for (ImageFile* f : {&set.kernel, &set.initrd, &set.rootfs}) {
    if (f->path.empty()) return corrupt("'" + manifest_path + "' does not list all of kernel, initrd, rootfs");
    if (auto r = verify_image(*f); !r) return std::move(r).error();
  }
  // A builder is described by its package list (the layer keys name its
  // pip and npm): one without the other is a half-written image set.
  if (set.builder.path.empty() != set.builder_packages.path.empty())
    return corrupt("'" + manifest_path + "' lists one of builder, builder_packages without the other");
  if (!set.builder.path.empty())
    if (auto r = verify_image(set.builder); !r) return std::move(r).error();
  // Each list read once: what is parsed is exactly what was hashed.
  auto load_list = [](const ImageFile& f, std::vector<PackageInfo>& out) -> Result<void> {
    if (f.path.empty()) return {};
    auto text = read_verified(f, kMaxPackageListBytes);
    if (!text) return std::move(text).error();
    auto packages = parse_package_list(*text);
    if (!packages) return std::move(packages).error().context(f.path);
    out = std::move(*packages);
    return {};
  };
  if (auto r = load_list(set.packages, set.root_packages); !r) return std::move(r).error();
  if (auto r = load_list(set.builder_packages, set.builder_root_packages); !r) return std::move(r).error();
  return set;
}

ImagesInfo describe_images(const ImageSet& set) {
  ImagesInfo info;
  info.directory = set.dir;
  auto base = [](const std::string& path) { return path.substr(path.rfind('/') + 1); };
  info.images = {{"kernel", base(set.kernel.path), set.kernel.sha256},
                 {"initrd", base(set.initrd.path), set.initrd.sha256},
                 {"rootfs", base(set.rootfs.path), set.rootfs.sha256}};
  if (!set.builder.path.empty()) info.images.push_back({"builder", base(set.builder.path), set.builder.sha256});
  info.kernel_release = set.kernel_release;
  info.description = set.description.substr(0, limits::kMaxMessageBytes);
  auto find = [](const std::vector<PackageInfo>& list, std::string_view pattern) -> const PackageInfo* {
    for (const auto& p : list)
      if (package_matches(pattern, p.name)) return &p;
    return nullptr;
  };
  for (const auto& t : kTools) {
    const PackageInfo* p = find(set.root_packages, t.package);
    if (!p) p = find(set.builder_root_packages, t.package);
    if (p) info.tools.push_back({std::string(t.tool), p->name, p->version});
  }
  info.packages = set.root_packages;
  info.packages_sha256 = set.packages.sha256;
  return info;
}

}  // namespace sandbox::daemon
