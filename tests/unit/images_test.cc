#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/protocol.h"
#include "daemon/digest.h"
#include "daemon/images.h"
#include "temp_dir.h"

using namespace sandbox;
using namespace sandbox::daemon;
using sandbox::test::TempDir;
namespace fs = std::filesystem;

namespace {

// SHA-256 of "abc" (FIPS 180-2 test vector) and of the empty string.
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

}  // namespace

TEST_CASE("sha256 of known vectors") {
  TempDir d;
  d.write("abc", "abc");
  d.write("empty", "");
  CHECK(*sha256_file(d.path + "/abc") == kAbc);
  CHECK(*sha256_file(d.path + "/empty") == kEmpty);
  CHECK(sha256_file(d.path + "/missing").error().code == ErrorCode::not_found);
  CHECK(sha256_hex("abc") == kAbc);
}

TEST_CASE("a manifest whose hashes match loads with absolute paths") {
  TempDir d;
  d.write("k", "abc");
  d.write("i", "");
  d.write("r", "abc");
  d.write("manifest", std::string("# test images\n") + kAbc + " kernel k\n" + kEmpty + " initrd i\n" + kAbc +
                          " rootfs r\n");
  auto set = load_images(d.path);
  REQUIRE_MESSAGE(set.ok(), set.error().message);
  CHECK(set->kernel.path == fs::canonical(d.path).string() + "/k");
  CHECK(set->description == "test images");
  // No builder named: an image set that builds no package layers.
  CHECK(set->builder.path.empty());
  CHECK(set->builder_packages.path.empty());
  CHECK(set->builder_root_packages.empty());
}

TEST_CASE("a changed file is image_corrupt, a missing one image_missing") {
  TempDir d;
  d.write("k", "abd");
  d.write("i", "");
  d.write("r", "abc");
  d.write("manifest", std::string(kAbc) + " kernel k\n" + kEmpty + " initrd i\n" + kAbc + " rootfs r\n");
  auto set = load_images(d.path);
  REQUIRE_FALSE(set.ok());
  CHECK(set.error().code == ErrorCode::image_corrupt);
  CHECK(set.error().message.find("/k' has SHA-256") != std::string::npos);

  fs::remove(d.path + "/k");
  CHECK(load_images(d.path).error().code == ErrorCode::image_missing);
  fs::remove(d.path + "/manifest");
  CHECK(load_images(d.path).error().code == ErrorCode::image_missing);
  CHECK(load_images("/nonexistent-images-dir").error().code == ErrorCode::image_missing);
}

TEST_CASE("manifests that try to point outside the directory are refused") {
  TempDir d;
  d.write("manifest", std::string(kAbc) + " kernel ../../etc/passwd\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
  d.write("manifest", std::string(kAbc) + " bootloader k\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
}

TEST_CASE("the package list is verified, parsed and described with the kernel release") {
  TempDir d;
  d.write("k", "abc");
  d.write("i", "");
  d.write("r", "abc");
  std::string packages = "bash=5.2.15-2+b7\nnodejs=18.20.4+dfsg-1~deb12u1\npython3=3.11.2-1+b1\n"
                         "python3.11=3.11.2-6+deb12u6\npython3.11-venv=3.11.2-6+deb12u6\ngit=1:2.39.5-0+deb12u2\n";
  d.write("packages", packages);
  std::string files = std::string(kAbc) + " kernel k 6.1.0-37-amd64\n" + kEmpty + " initrd i\n" + kAbc + " rootfs r\n";
  d.write("manifest", "# test images\n" + files + sha256_hex(packages) + " packages packages\n");
  auto set = load_images(d.path);
  REQUIRE_MESSAGE(set.ok(), set.error().message);
  CHECK(set->kernel_release == "6.1.0-37-amd64");
  CHECK(set->kernel_acpi);
  REQUIRE(set->root_packages.size() == 6);
  CHECK(set->root_packages[0].name == "bash");  // sorted by name

  auto info = describe_images(*set);
  CHECK(info.directory == fs::canonical(d.path).string());
  REQUIRE(info.images.size() == 3);
  CHECK(info.images[0].role == "kernel");
  CHECK(info.images[0].file == "k");
  CHECK(info.images[0].sha256 == kAbc);
  CHECK(info.images[2].role == "rootfs");
  CHECK(info.kernel_release == "6.1.0-37-amd64");
  CHECK(info.packages_sha256 == sha256_hex(packages));
  CHECK(info.packages.size() == 6);
  // Interpreters first; python3 is the versioned interpreter's package.
  REQUIRE(info.tools.size() >= 4);
  CHECK(info.tools[0].name == "python3");
  CHECK(info.tools[0].package == "python3.11");
  CHECK(info.tools[0].version == "3.11.2-6+deb12u6");
  CHECK(info.tools[1].name == "nodejs");
  CHECK(info.tools[2].name == "bash");
  CHECK(info.tools.back().name == "python3-venv");
  CHECK(info.tools.back().package == "python3.11-venv");

  // A package list that is not the one hashed is refused like any image.
  d.write("packages", packages + "evil=1\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
  fs::remove(d.path + "/packages");
  CHECK(load_images(d.path).error().code == ErrorCode::image_missing);
}

TEST_CASE("a kernel marked noacpi is booted without ACPI") {
  TempDir d;
  d.write("k", "abc");
  d.write("i", "");
  d.write("r", "abc");
  d.write("manifest", std::string(kAbc) + " kernel k 6.1.192-sandboxd noacpi\n" + kEmpty + " initrd i\n" + kAbc +
                          " rootfs r\n");
  auto set = load_images(d.path);
  REQUIRE_MESSAGE(set.ok(), set.error().message);
  CHECK(set->kernel_release == "6.1.192-sandboxd");
  CHECK_FALSE(set->kernel_acpi);
}

TEST_CASE("a manifest without a package list still loads, with no tools named") {
  TempDir d;
  d.write("k", "abc");
  d.write("i", "");
  d.write("r", "abc");
  d.write("manifest", std::string(kAbc) + " kernel k\n" + kEmpty + " initrd i\n" + kAbc + " rootfs r\n");
  auto set = load_images(d.path);
  REQUIRE_MESSAGE(set.ok(), set.error().message);
  auto info = describe_images(*set);
  CHECK(info.images.size() == 3);
  CHECK(info.tools.empty());
  CHECK(info.kernel_release.empty());
}

TEST_CASE("package lists and release columns that do not parse are image_corrupt") {
  CHECK(parse_package_list("").value().empty());
  CHECK(parse_package_list("a=1\n\nb=2").value().size() == 2);
  for (const std::string& bad : std::vector<std::string>{"noversion\n", "=1\n", "a=\n", "a b=1\n", "a=1 2\n", "a=\"1\"\n", "a=1\x1b[2J\n",
                          "a=" + std::string(limits::kMaxNameBytes + 1, '1') + "\n"}) {
    auto r = parse_package_list(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::image_corrupt);
  }
  std::string many;
  for (size_t i = 0; i <= proto::kMaxPackageEntries; ++i) many += "p" + std::to_string(i) + "=1\n";
  CHECK(parse_package_list(many).error().code == ErrorCode::image_corrupt);

  TempDir d;
  d.write("k", "abc");
  d.write("i", "");
  d.write("r", "abc");
  // Only the kernel's line has more columns: a release, then only "noacpi".
  d.write("manifest", std::string(kAbc) + " kernel k\n" + kEmpty + " initrd i 6.1\n" + kAbc + " rootfs r\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
  d.write("manifest", std::string(kAbc) + " kernel k 6.1 x\n" + kEmpty + " initrd i\n" + kAbc + " rootfs r\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
  d.write("manifest", std::string(kAbc) + " kernel k 6.1 noacpi x\n" + kEmpty + " initrd i\n" + kAbc + " rootfs r\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
  d.write("manifest", std::string(kAbc) + " kernel k $(reboot)\n" + kEmpty + " initrd i\n" + kAbc + " rootfs r\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
}

namespace {

// The root's list and the builder's, as images/build.sh writes them: the
// builder's holds the root's packages (here one at a newer version, which
// the root's own must win over) plus pip, npm and erofs-utils.
constexpr const char* kRootList = "nodejs=18.20.4+dfsg-1~deb12u3\npython3.11=3.11.2-6+deb12u9\n";
constexpr const char* kBuilderList =
    "apt=2.6.1\nerofs-utils=1.5-1\nnode-semver=7.3.5+~7.3.8-2\nnodejs=18.20.5+dfsg-1\nnpm=9.2.0~ds1-1\n"
    "python3-pip=23.0.1+dfsg-1\npython3.11=3.11.2-6+deb12u9\n";

// An image set with a builder: k, i, r and b for the images, the lists above.
std::string write_builder_set(TempDir& d) {
  d.write("k", "abc");
  d.write("i", "");
  d.write("r", "abc");
  d.write("b", "abc");
  d.write("packages", kRootList);
  d.write("builder.packages", kBuilderList);
  return std::string(kAbc) + " kernel k\n" + kEmpty + " initrd i\n" + kAbc + " rootfs r\n" +
         sha256_hex(kRootList) + " packages packages\n";
}

}  // namespace

TEST_CASE("a builder image is verified and its package managers are named as tools") {
  TempDir d;
  auto files = write_builder_set(d);
  d.write("manifest",
          files + kAbc + " builder b\n" + sha256_hex(kBuilderList) + " builder_packages builder.packages\n");
  auto set = load_images(d.path);
  REQUIRE_MESSAGE(set.ok(), set.error().message);
  CHECK(set->builder.path == fs::canonical(d.path).string() + "/b");
  CHECK(set->builder.sha256 == kAbc);
  CHECK(set->builder_root_packages.size() == 7);
  CHECK(set->root_packages.size() == 2);

  auto info = describe_images(*set);
  REQUIRE(info.images.size() == 4);
  CHECK(info.images[3].role == "builder");
  CHECK(info.images[3].file == "b");
  CHECK(info.images[3].sha256 == kAbc);
  // Clients see the guest root's packages, not the builder's.
  CHECK(info.packages.size() == 2);
  CHECK(info.packages_sha256 == sha256_hex(kRootList));
  auto tool = [&](std::string_view name) -> std::string {
    for (const auto& t : info.tools)
      if (t.name == name) return t.package + "=" + t.version;
    return "none";
  };
  // The layer keys' installer facts (daemon/options.cc reads them so).
  CHECK(tool("pip") == "python3-pip=23.0.1+dfsg-1");
  CHECK(tool("npm") == "npm=9.2.0~ds1-1");
  CHECK(tool("mkfs.erofs") == "erofs-utils=1.5-1");
  CHECK(tool("apt") == "apt=2.6.1");
  // The root's list first: runs use the root's node, not the builder's.
  CHECK(tool("nodejs") == "nodejs=18.20.4+dfsg-1~deb12u3");
  CHECK(tool("python3") == "python3.11=3.11.2-6+deb12u9");
  CHECK(info.tools.size() <= proto::kMaxToolEntries);
}

TEST_CASE("a builder that is not the one hashed, or half listed, is refused") {
  TempDir d;
  auto files = write_builder_set(d);
  auto builder_lines = std::string(kAbc) + " builder b\n" + sha256_hex(kBuilderList) +
                       " builder_packages builder.packages\n";
  d.write("manifest", files + builder_lines);
  REQUIRE(load_images(d.path).ok());

  d.write("b", "abd");
  auto set = load_images(d.path);
  REQUIRE_FALSE(set.ok());
  CHECK(set.error().code == ErrorCode::image_corrupt);
  CHECK(set.error().message.find("/b' has SHA-256") != std::string::npos);
  fs::remove(d.path + "/b");
  CHECK(load_images(d.path).error().code == ErrorCode::image_missing);

  d.write("b", "abc");
  d.write("builder.packages", std::string(kBuilderList) + "evil=1\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
  d.write("builder.packages", kBuilderList);
  REQUIRE(load_images(d.path).ok());

  // One without the other: a layer key could not name the builder's tools.
  d.write("manifest", files + kAbc + " builder b\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
  d.write("manifest", files + sha256_hex(kBuilderList) + " builder_packages builder.packages\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
  // Only the kernel's line has more columns.
  d.write("manifest", files + kAbc + " builder b 6.1\n" + sha256_hex(kBuilderList) +
                          " builder_packages builder.packages\n");
  CHECK(load_images(d.path).error().code == ErrorCode::image_corrupt);
}

TEST_CASE("without a builder, the package managers are not named") {
  TempDir d;
  auto files = write_builder_set(d);
  d.write("manifest", files);
  auto set = load_images(d.path);
  REQUIRE_MESSAGE(set.ok(), set.error().message);
  CHECK(set->builder.path.empty());
  CHECK(set->builder_root_packages.empty());
  auto info = describe_images(*set);
  CHECK(info.images.size() == 3);
  for (const auto& t : info.tools) {
    CHECK(t.name != "pip");
    CHECK(t.name != "npm");
    CHECK(t.name != "mkfs.erofs");
  }
}
