// The guest images the daemon boots, found through a manifest in the images
// directory and verified by SHA-256 before use; and their description for
// clients (`sandboxctl images`).
#pragma once

#include <string>
#include <vector>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox::daemon {

struct ImageFile {
  std::string path;
  std::string sha256;
};

struct ImageSet {
  std::string dir;
  ImageFile kernel;  // uncompressed vmlinux (PVH entry)
  ImageFile initrd;  // agent + modules
  ImageFile rootfs;  // read-only root
  // The root's package list ("name=version" lines from its dpkg database);
  // empty path when the manifest names none (images built before it did).
  ImageFile packages;
  // The package builder's root (the root plus pip, npm and erofs-utils) and
  // its package list: both empty when the manifest names neither, and then
  // no package layer can be built.
  ImageFile builder;
  ImageFile builder_packages;
  std::string kernel_release;  // the kernel line's fourth column, `uname -r`
  // Whether the kernel finds its devices through ACPI tables (Debian's) or
  // on the command line QEMU writes for it (ours, built without ACPI).
  bool kernel_acpi = true;
  std::string description;     // the manifest's comment line
  std::vector<PackageInfo> root_packages;  // parsed from `packages`, as verified
  std::vector<PackageInfo> builder_root_packages;  // parsed from `builder_packages`, as verified
};

// Reads `dir`/manifest and hashes every file it names: image_missing when a
// file or the manifest is absent, image_corrupt when a hash differs, a line
// (or a package list) does not parse, or the builder is named without its
// package list or the other way round.
Result<ImageSet> load_images(const std::string& dir);

// Parses "name=version" lines, one package each, as images/build.sh writes
// them from the root's dpkg database; image_corrupt past the bounds.
Result<std::vector<PackageInfo>> parse_package_list(std::string_view text);

// What clients see: files, hashes, kernel release, and the interpreters and
// tools in the root (and the package managers in the builder's root) with
// the versions of their packages.
ImagesInfo describe_images(const ImageSet& set);

}  // namespace sandbox::daemon
