#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

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
