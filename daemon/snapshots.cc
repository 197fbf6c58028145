#include "daemon/snapshots.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "daemon/digest.h"

namespace sandbox::daemon {
namespace fs = std::filesystem;

namespace {

std::map<std::string, std::string> read_meta(const std::string& path) {
  std::map<std::string, std::string> m;
  std::ifstream in(path);
  std::string k, v;
  while (in >> k >> v) m[k] = v;
  return m;
}

// Copies the data of `from` to `to` (both `size` bytes), skipping holes:
// most of a guest's RAM was never touched.
Result<void> copy_sparse(int from, int to, off_t size) {
  if (::ftruncate(to, size) != 0) return Error::sys("ftruncate");
  std::vector<char> buf(1 << 20);
  off_t off = 0;
  while (off < size) {
    off_t data = ::lseek(from, off, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      return Error::sys("lseek SEEK_DATA");
    }
    off_t hole = ::lseek(from, data, SEEK_HOLE);
    if (hole < 0) return Error::sys("lseek SEEK_HOLE");
    for (off = data; off < hole;) {
      auto want = static_cast<size_t>(std::min<off_t>(hole - off, static_cast<off_t>(buf.size())));
      ssize_t n = ::pread(from, buf.data(), want, off);
      if (n <= 0) return Error::sys("pread");
      // All-zero pages stay holes in the copy too.
      if (std::any_of(buf.data(), buf.data() + n, [](char c) { return c != 0; }) &&
          ::pwrite(to, buf.data(), static_cast<size_t>(n), off) != n)
        return Error::sys("pwrite");
      off += n;
    }
  }
  return ok();
}

// The RAM file of a snapshot as a sealed memfd for clones.
Result<unique_fd> load_sealed(const std::string& path, uint32_t memory_mb) {
  unique_fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file) return Error::sys("open", path);
  struct stat st{};
  if (::fstat(file.get(), &st) != 0 || st.st_size != static_cast<off_t>(memory_mb) << 20)
    return Error::make(ErrorCode::internal, path + " does not hold " + std::to_string(memory_mb) + " MB");
  unique_fd mem(::memfd_create("sandboxd-snapshot-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!mem) return Error::sys("memfd_create");
  if (auto r = copy_sparse(file.get(), mem.get(), st.st_size); !r) return std::move(r).error().context("loading " + path);
  // Sealed: no write(), no shared writable mapping, no resize, ever. QEMU
  // opens it read-write but can only map it privately.
  if (::fcntl(mem.get(), F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    return Error::sys("sealing the snapshot's RAM");
  return mem;
}

uint64_t disk_bytes(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

}  // namespace

std::string snapshot_fingerprint(const std::vector<std::string>& parts) {
  std::string all;
  for (const auto& p : parts) all += p + "\n";
  return sha256_hex(all);
}

SnapshotStore::SnapshotStore(std::string dir, std::string fingerprint, uint64_t max_bytes)
    : dir_(std::move(dir)), fingerprint_(std::move(fingerprint)), max_bytes_(max_bytes) {}

std::string SnapshotStore::key(Language language, uint32_t memory_mb, const std::string& layer) const {
  std::string what = fingerprint_ + " " + std::string(language_name(language)) + " " + std::to_string(memory_mb);
  if (!layer.empty()) what += " layer " + layer;
  return sha256_hex(what).substr(0, 24);
}

Result<std::vector<std::string>> SnapshotStore::init() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return Error::make(ErrorCode::internal, "create '" + dir_ + "': " + ec.message());
  if (::chmod(dir_.c_str(), 0700) != 0) return Error::sys("chmod", dir_);
  std::vector<std::string> dropped;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    std::string path = e.path().string();
    if (name.starts_with(".tmp")) {  // a crash mid-write
      fs::remove_all(path, ec);
      dropped.push_back(name + " (unfinished)");
      continue;
    }
    auto meta = read_meta(path + "/meta");
    if (meta["fingerprint"] != fingerprint_) {
      fs::remove_all(path, ec);
      dropped.push_back(name + " (images, kernel, QEMU or VM shape changed)");
      continue;
    }
    auto state = sha256_file(path + "/state");
    auto ram = sha256_file(path + "/ram");
    if (!state || !ram || *state != meta["state_sha256"] || *ram != meta["ram_sha256"]) {
      fs::remove_all(path, ec);
      dropped.push_back(name + " (corrupt: hash mismatch)");
    }
  }
  evict();
  return dropped;
}

std::optional<SnapshotStore::Entry> SnapshotStore::find(const std::string& key) {
  std::string dir = dir_ + "/" + key;
  auto meta = read_meta(dir + "/meta");
  if (meta.empty() || meta["fingerprint"] != fingerprint_) return std::nullopt;
  Entry e;
  e.key = key;
  e.dir = dir;
  e.ram = dir + "/ram";
  e.state = dir + "/state";
  e.language = schema::EnumNames<Language>::parse(meta["language"]).value_or(Language::python);
  e.memory_mb = static_cast<uint32_t>(std::strtoul(meta["memory_mb"].c_str(), nullptr, 10));
  e.layer = meta["layer"];
  e.bytes = disk_bytes(e.ram) + disk_bytes(e.state);
  e.state_sha256 = meta["state_sha256"];
  e.ram_sha256 = meta["ram_sha256"];
  ::utimensat(AT_FDCWD, dir.c_str(), nullptr, 0);  // recently used
  return e;
}

Result<SnapshotStore::Pending> SnapshotStore::begin(Language language, uint32_t memory_mb, const std::string& layer) {
  Pending p;
  p.key = key(language, memory_mb, layer);
  p.language = language;
  p.memory_mb = memory_mb;
  p.layer = layer;
  std::string tmpl = dir_ + "/.tmp-" + p.key + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return Error::sys("mkdtemp", tmpl);
  p.dir = tmpl;
  p.ram = p.dir + "/ram";
  p.ram_fd.reset(::memfd_create("sandboxd-template-ram", MFD_CLOEXEC));
  if (!p.ram_fd || ::ftruncate(p.ram_fd.get(), static_cast<off_t>(memory_mb) << 20) != 0)
    return Error::sys("memfd for the template's RAM");
  p.state.reset(::open((p.dir + "/state").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!p.state) return Error::sys("create", p.dir + "/state");
  return p;
}

Result<SnapshotStore::Written> SnapshotStore::write_out(Pending p, const std::atomic<bool>* stop) {
  Written w;
  w.key = p.key;
  w.dir = p.dir;
  w.language = p.language;
  w.memory_mb = p.memory_mb;
  w.layer = p.layer;
  auto steps = [&]() -> Result<void> {
    auto stopped = [&] { return stop && stop->load(); };
    // Everything on disk before the rename makes the entry visible.
    if (::fsync(p.state.get()) != 0) return Error::sys("fsync", p.dir + "/state");
    p.state.reset();
    {
      unique_fd ram(::open(p.ram.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!ram) return Error::sys("create", p.ram);
      if (auto r = copy_sparse(p.ram_fd.get(), ram.get(), static_cast<off_t>(p.memory_mb) << 20); !r)
        return std::move(r).error().context("writing " + p.ram);
      if (::fsync(ram.get()) != 0) return Error::sys("fsync", p.ram);
    }
    p.ram_fd.reset();
    if (stopped()) return Error::make(ErrorCode::internal, "stopped");
    auto sealed = load_sealed(p.ram, p.memory_mb);
    if (!sealed) return std::move(sealed).error();
    w.sealed_ram = std::move(*sealed);
    if (stopped()) return Error::make(ErrorCode::internal, "stopped");
    auto state_sha = sha256_file(p.dir + "/state");
    if (!state_sha) return std::move(state_sha).error();
    auto ram_sha = sha256_file(p.ram);
    if (!ram_sha) return std::move(ram_sha).error();
    w.state_sha256 = std::move(*state_sha);
    w.ram_sha256 = std::move(*ram_sha);
    return ok();
  };
  if (auto r = steps(); !r) {
    p.state.reset();
    std::error_code ec;
    fs::remove_all(p.dir, ec);
    return std::move(r).error();
  }
  return w;
}

Result<SnapshotStore::Entry> SnapshotStore::publish(Written w) {
  std::error_code ec;
  fs::remove_all(dir_ + "/" + w.key, ec);
  auto e = publish(w.dir, w.key, w.language, w.memory_mb, w.layer, w.state_sha256, w.ram_sha256);
  if (e && w.sealed_ram) sealed_[w.key] = std::move(w.sealed_ram);
  return e;
}

void SnapshotStore::abort_written(const Written& w) {
  std::error_code ec;
  fs::remove_all(w.dir, ec);
}

Result<SnapshotStore::Entry> SnapshotStore::publish(const std::string& tmp_dir, const std::string& key,
                                                    Language language, uint32_t memory_mb, const std::string& layer,
                                                    const std::string& state_sha, const std::string& ram_sha) {
  {
    std::ofstream meta(tmp_dir + "/meta");
    meta << "fingerprint " << fingerprint_ << "\nlanguage " << language_name(language) << "\nmemory_mb " << memory_mb
         << "\nstate_sha256 " << state_sha << "\nram_sha256 " << ram_sha << "\n";
    if (!layer.empty()) meta << "layer " << layer << "\n";
    if (!meta.flush()) return Error::sys("write", tmp_dir + "/meta");
  }
  std::string final_dir = dir_ + "/" + key;
  if (::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) return Error::sys("rename", final_dir);
  evict();
  auto e = find(key);
  if (!e) return Error::make(ErrorCode::internal, "snapshot vanished after it was published");
  return *e;
}

Result<std::string> SnapshotStore::begin_fetch(const std::string& key) {
  std::string tmpl = dir_ + "/.tmp-fetch-" + key + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return Error::sys("mkdtemp", tmpl);
  return tmpl;
}

Result<SnapshotStore::Entry> SnapshotStore::adopt(const std::string& dir, const SnapshotDescription& d) {
  if (auto existing = find(d.key)) {
    abort_fetch(dir);
    return *existing;
  }
  // rename() onto a missing name: an entry that appeared since stays (the
  // rename fails on a non-empty directory) and this one goes.
  auto e = publish(dir, d.key, d.language, d.memory_mb, d.layer, d.state.sha256, d.ram.sha256);
  if (!e) abort_fetch(dir);
  return e;
}

void SnapshotStore::abort_fetch(const std::string& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
}

void SnapshotStore::abort(Pending p) {
  p.state.reset();
  std::error_code ec;
  fs::remove_all(p.dir, ec);
}

Result<int> SnapshotStore::clone_ram(const Entry& entry) {
  if (auto it = sealed_.find(entry.key); it != sealed_.end()) return it->second.get();
  auto mem = load_sealed(entry.ram, entry.memory_mb);
  if (!mem) return std::move(mem).error();
  int fd = mem->get();
  sealed_[entry.key] = std::move(*mem);
  return fd;
}

void SnapshotStore::drop(const std::string& key) {
  sealed_.erase(key);
  std::error_code ec;
  fs::remove_all(dir_ + "/" + key, ec);
}

std::vector<SnapshotStore::Entry> SnapshotStore::list() const {
  std::vector<Entry> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (name.starts_with(".")) continue;
    auto meta = read_meta(e.path().string() + "/meta");
    Entry x;
    x.key = name;
    x.dir = e.path().string();
    x.ram = x.dir + "/ram";
    x.state = x.dir + "/state";
    x.language = schema::EnumNames<Language>::parse(meta["language"]).value_or(Language::python);
    x.memory_mb = static_cast<uint32_t>(std::strtoul(meta["memory_mb"].c_str(), nullptr, 10));
    x.bytes = disk_bytes(x.ram) + disk_bytes(x.state);
    out.push_back(x);
  }
  return out;
}

void SnapshotStore::evict() {
  auto entries = list();
  uint64_t total = 0;
  for (auto& e : entries) total += e.bytes;
  // Least recently used first (the directory's mtime is touched on use).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    std::error_code ec;
    return fs::last_write_time(a.dir, ec) < fs::last_write_time(b.dir, ec);
  });
  for (auto& e : entries) {
    if (total <= max_bytes_) break;
    drop(e.key);
    total -= std::min(total, e.bytes);
  }
}

}  // namespace sandbox::daemon
