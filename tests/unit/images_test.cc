#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/protocol.h"
#include "daemon/digest.h"
#include "daemon/images.h"

using namespace sandbox;
using namespace sandbox::daemon;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/sandboxd-unit.XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& data) { std::ofstream(path + "/" + name) << data; }
};

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
