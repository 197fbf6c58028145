#include "daemon/snapshot_share.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "daemon/digest.h"

namespace sandbox::daemon {
namespace {

// Fast and still turns a mostly-zero RAM file into a small fraction.
constexpr int kZstdLevel = 3;
constexpr size_t kChunk = 1 << 20;
constexpr size_t kPage = 4096;

using CCtx = std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)>;
using DCtx = std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)>;

Error stopped() { return Error::make(ErrorCode::communication, "transfer stopped"); }

Result<void> write_all(int fd, const char* data, size_t size, const char* what) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error::sys("write", what);
    data += n;
    size -= static_cast<size_t>(n);
  }
  return ok();
}

// Writes `data` at `off`, page by page, leaving all-zero pages as holes.
Result<void> write_sparse(int fd, const char* data, size_t size, uint64_t off) {
  for (size_t at = 0; at < size; at += kPage) {
    size_t n = std::min(kPage, size - at);
    if (std::all_of(data + at, data + at + n, [](char c) { return c == 0; })) continue;
    if (::pwrite(fd, data + at, n, static_cast<off_t>(off + at)) != static_cast<ssize_t>(n))
      return Error::sys("pwrite", "snapshot file");
  }
  return ok();
}

// On a worker: one file of a template into `path`, checked against `f`.
Result<void> fetch_file(const ObjectStore& store, const std::string& key, const std::string& name,
                        const SnapshotFile& f, const std::string& path, const std::atomic<bool>& stop) {
  unique_fd out(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) return Error::sys("create", path);
  auto object = snapshot_file_object(key, name, f.encoding);
  auto corrupt = [&](const std::string& why) {
    return Error::make(ErrorCode::image_corrupt, "snapshot " + key + ": " + object + " " + why);
  };
  // The compressed object goes to an unnamed file: nothing to clean up.
  unique_fd packed;
  if (f.encoding == SnapshotEncoding::zstd) {
    auto dir = path.substr(0, path.rfind('/'));
    packed.reset(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!packed) return Error::sys("open O_TMPFILE", dir);
  }
  int into = packed ? packed.get() : out.get();
  auto got = store.get_to_fd(object, into, f.stored_bytes, stop);
  if (!got) {
    if (got.error().code == ErrorCode::capacity) return corrupt("is larger than its description says");
    return std::move(got).error();
  }
  if (*got != f.stored_bytes)
    return corrupt("is " + std::to_string(*got) + " bytes, its description says " + std::to_string(f.stored_bytes));
  std::string sha;
  if (packed) {
    auto r = zstd_decompress_fd(packed.get(), f.stored_bytes, out.get(), f.bytes, stop);
    if (!r) return std::move(r).error().context(object);
    sha = *r;
  } else {
    auto r = sha256_file(path);
    if (!r) return std::move(r).error();
    sha = *r;
  }
  if (sha != f.sha256) return corrupt("does not match its description's SHA-256");
  if (::fsync(out.get()) != 0) return Error::sys("fsync", path);
  return ok();
}

Result<SnapshotDescription> fetch_now(const ObjectStore& store, const std::string& key, const std::string& dir,
                                      uint64_t max_bytes, const std::atomic<bool>& stop) {
  auto text = store.get(snapshot_description_object(key), kMaxSnapshotDescriptionBytes, stop);
  if (!text) return std::move(text).error();
  auto d = parse_snapshot_description(*text);
  if (!d) return std::move(d).error().context("snapshot " + key);
  if (d->key != key) return Error::make(ErrorCode::image_corrupt, "snapshot " + key + ": its description names another");
  // Each size is bounded by the parser's integer width only: the sum of
  // two of them cannot wrap once each is under the bound.
  if (d->state.bytes > max_bytes || d->ram.bytes > max_bytes || d->state.bytes + d->ram.bytes > max_bytes ||
      d->state.stored_bytes > max_bytes || d->ram.stored_bytes > max_bytes)
    return Error::make(ErrorCode::capacity, "snapshot " + key + " is over cache_store_max_mb");
  if (auto r = fetch_file(store, key, "state", d->state, dir + "/state", stop); !r) return std::move(r).error();
  if (auto r = fetch_file(store, key, "ram", d->ram, dir + "/ram", stop); !r) return std::move(r).error();
  return d;
}

// One file as it goes to the store: compressed into a memfd when that
// pays, else the file itself.
Result<void> upload_file(const ObjectStore& store, const std::string& key, const std::string& name, int fd,
                         SnapshotFile* f, const std::atomic<bool>& stop) {
  unique_fd packed(::memfd_create("sandboxd-snapshot-upload", MFD_CLOEXEC));
  if (!packed) return Error::sys("memfd_create");
  std::string packed_sha;
  auto size = zstd_compress_fd(fd, f->bytes, packed.get(), &packed_sha, stop);
  if (!size) return std::move(size).error().context("compressing " + name);
  if (*size) {
    f->encoding = SnapshotEncoding::zstd;
    f->stored_bytes = **size;
    return store.put_fd(snapshot_file_object(key, name, f->encoding), packed.get(), f->stored_bytes, packed_sha, stop);
  }
  f->encoding = SnapshotEncoding::raw;
  f->stored_bytes = f->bytes;
  return store.put_fd(snapshot_file_object(key, name, f->encoding), fd, f->bytes, f->sha256, stop);
}

}  // namespace

std::string snapshot_description_object(const std::string& key) { return "snapshots/" + key + ".snapshot"; }
std::string snapshot_file_object(const std::string& key, const std::string& file, SnapshotEncoding encoding) {
  return "snapshots/" + key + "." + file + (encoding == SnapshotEncoding::zstd ? ".zst" : "");
}

Result<std::optional<uint64_t>> zstd_compress_fd(int in, uint64_t size, int out, std::string* sha256,
                                                 const std::atomic<bool>& stop) {
  CCtx cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!cctx) return Error::make(ErrorCode::internal, "ZSTD_createCCtx failed");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, kZstdLevel);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setPledgedSrcSize(cctx.get(), size);
  const uint64_t pays = size - size / 10;
  std::vector<char> src(kChunk), dst(ZSTD_CStreamOutSize());
  Sha256 digest;
  uint64_t read = 0, written = 0;
  for (bool last = false; !last;) {
    if (stop) return stopped();
    size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, size - read));
    ssize_t n = want ? ::pread(in, src.data(), want, static_cast<off_t>(read)) : 0;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || static_cast<size_t>(n) != want) return Error::sys("pread", "snapshot file");
    read += want;
    last = read == size;
    ZSTD_inBuffer ib{src.data(), want, 0};
    for (bool done = false; !done;) {
      ZSTD_outBuffer ob{dst.data(), dst.size(), 0};
      size_t rest = ZSTD_compressStream2(cctx.get(), &ob, &ib, last ? ZSTD_e_end : ZSTD_e_continue);
      if (ZSTD_isError(rest)) return Error::make(ErrorCode::internal, std::string("zstd: ") + ZSTD_getErrorName(rest));
      if (auto r = write_all(out, dst.data(), ob.pos, "compressed snapshot file"); !r) return std::move(r).error();
      digest.update(dst.data(), ob.pos);
      written += ob.pos;
      if (written > pays) return std::optional<uint64_t>();
      done = last ? rest == 0 : ib.pos == ib.size;
    }
  }
  *sha256 = digest.hex();
  return std::optional<uint64_t>(written);
}

Result<std::string> zstd_decompress_fd(int in, uint64_t in_size, int out, uint64_t bytes,
                                       const std::atomic<bool>& stop) {
  auto corrupt = [](const std::string& why) { return Error::make(ErrorCode::image_corrupt, why); };
  DCtx dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) return Error::make(ErrorCode::internal, "ZSTD_createDCtx failed");
  // A frame may not ask for more than a modest window (zstd's default cap).
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, 27);
  if (::ftruncate(out, static_cast<off_t>(bytes)) != 0) return Error::sys("ftruncate", "snapshot file");
  std::vector<char> src(kChunk), dst(kChunk);
  Sha256 digest;
  uint64_t read = 0, written = 0;
  size_t rest = 1;  // zstd's hint: 0 once a frame is complete
  while (read < in_size) {
    if (stop) return stopped();
    size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, in_size - read));
    ssize_t n = ::pread(in, src.data(), want, static_cast<off_t>(read));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || static_cast<size_t>(n) != want) return Error::sys("pread", "fetched snapshot file");
    read += want;
    ZSTD_inBuffer ib{src.data(), want, 0};
    // Until the chunk is used up and zstd holds no more output (a full
    // output buffer says it may).
    for (bool full = true; ib.pos < ib.size || (full && rest != 0);) {
      if (rest == 0) return corrupt("data after the compressed frame");
      ZSTD_outBuffer ob{dst.data(), dst.size(), 0};
      rest = ZSTD_decompressStream(dctx.get(), &ob, &ib);
      if (ZSTD_isError(rest)) return corrupt(std::string("zstd: ") + ZSTD_getErrorName(rest));
      if (ob.pos > bytes - written) return corrupt("decompresses to more than its description says");
      if (auto r = write_sparse(out, dst.data(), ob.pos, written); !r) return std::move(r).error();
      digest.update(dst.data(), ob.pos);
      written += ob.pos;
      full = ob.pos == ob.size;
    }
  }
  if (rest != 0) return corrupt("a truncated compressed frame");
  if (written != bytes) return corrupt("decompresses to less than its description says");
  return digest.hex();
}

SnapshotShare::SnapshotShare(uv_loop_t* loop, LayerShareOptions options) : StoreTransfers(loop, std::move(options)) {}

void SnapshotShare::fetch(const std::string& key, const std::string& dir,
                          std::function<void(Result<SnapshotDescription>)> done) {
  transfer<SnapshotDescription>(
      [key, dir, max = options_.max_image_bytes](const ObjectStore& store, const std::atomic<bool>& stop) {
        auto d = fetch_now(store, key, dir, max, stop);
        if (!d) {
          // Whatever was written goes, whatever went wrong.
          std::error_code ec;
          std::filesystem::remove(dir + "/state", ec);
          std::filesystem::remove(dir + "/ram", ec);
        }
        return d;
      },
      std::move(done));
}

void SnapshotShare::upload(SnapshotDescription description, unique_fd state, unique_fd ram,
                           std::function<void(Result<uint64_t>)> done) {
  if (!options_.upload) return;
  if (description.state.bytes + description.ram.bytes > options_.max_image_bytes) {
    done(Error::make(ErrorCode::capacity, "snapshot " + description.key + " is over cache_store_max_mb"));
    return;
  }
  auto fds = std::make_shared<std::pair<unique_fd, unique_fd>>(std::move(state), std::move(ram));
  transfer<uint64_t>(
      [d = std::move(description), fds](const ObjectStore& store, const std::atomic<bool>& stop) mutable
      -> Result<uint64_t> {
        if (auto r = upload_file(store, d.key, "state", fds->first.get(), &d.state, stop); !r)
          return std::move(r).error();
        if (auto r = upload_file(store, d.key, "ram", fds->second.get(), &d.ram, stop); !r)
          return std::move(r).error();
        if (auto r = store.put(snapshot_description_object(d.key), format_snapshot_description(d), stop); !r)
          return std::move(r).error();
        return d.state.stored_bytes + d.ram.stored_bytes;
      },
      std::move(done));
}

}  // namespace sandbox::daemon
