// The snapshot store (daemon/snapshots.h) without QEMU: a saved template's
// files written out on another thread, then published on the store's;
// what a stop or an abort leaves behind.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "daemon/digest.h"
#include "daemon/snapshots.h"
#include "temp_dir.h"

using namespace sandbox;
using namespace sandbox::daemon;
using sandbox::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

// A template as QEMU leaves it: device state in the file, guest RAM (mostly
// holes) in the memfd.
SnapshotStore::Pending saved_template(SnapshotStore& store, uint32_t memory_mb) {
  auto p = store.begin(Language::python, memory_mb);
  REQUIRE(p.ok());
  std::string state = "device state";
  REQUIRE(::write(p->state.get(), state.data(), state.size()) == static_cast<ssize_t>(state.size()));
  std::string page(4096, 'r');
  REQUIRE(::pwrite(p->ram_fd.get(), page.data(), page.size(), 1 << 20) == static_cast<ssize_t>(page.size()));
  return std::move(*p);
}

}  // namespace

TEST_CASE("snapshots: a template written out on another thread becomes an entry once published") {
  TempDir dir;
  SnapshotStore store(dir.path, "fingerprint", uint64_t{1} << 30);
  REQUIRE(store.init().ok());
  auto pending = saved_template(store, 4);
  std::string key = pending.key;

  Result<SnapshotStore::Written> written = Error::make(ErrorCode::internal, "not run");
  std::thread([&] { written = SnapshotStore::write_out(std::move(pending)); }).join();
  REQUIRE_MESSAGE(written.ok(), written.error().describe());
  // Written but not yet visible.
  CHECK_FALSE(store.find(key).has_value());
  CHECK(store.list().empty());

  auto entry = store.publish(std::move(*written));
  REQUIRE_MESSAGE(entry.ok(), entry.error().describe());
  CHECK(entry->key == key);
  CHECK(names(dir.path) == std::vector<std::string>{key});
  CHECK(entry->state_sha256 == sha256_file(entry->state).value());
  CHECK(entry->ram_sha256 == sha256_file(entry->ram).value());
  CHECK(fs::file_size(entry->ram) == 4u << 20);

  // Clones get the RAM loaded at write-out: sealed, with the guest's page.
  auto ram = store.clone_ram(*entry);
  REQUIRE(ram.ok());
  CHECK((::fcntl(*ram, F_GET_SEALS) & F_SEAL_WRITE) != 0);
  char byte = 0;
  CHECK(::pread(*ram, &byte, 1, (1 << 20) + 10) == 1);
  CHECK(byte == 'r');
  CHECK(::pwrite(*ram, "x", 1, 0) == -1);
  CHECK(store.clone_ram(*entry).value() == *ram);
}

TEST_CASE("snapshots: a write-out stopped or aborted leaves no entry and no files") {
  TempDir dir;
  SnapshotStore store(dir.path, "fingerprint", uint64_t{1} << 30);
  REQUIRE(store.init().ok());

  std::atomic<bool> stop{true};
  auto stopped = SnapshotStore::write_out(saved_template(store, 4), &stop);
  CHECK_FALSE(stopped.ok());
  CHECK(names(dir.path).empty());

  auto written = SnapshotStore::write_out(saved_template(store, 4));
  REQUIRE(written.ok());
  CHECK(names(dir.path).size() == 1);  // its temp directory
  store.abort_written(*written);
  CHECK(names(dir.path).empty());
  CHECK(store.list().empty());
}
