// A client of an S3-compatible object store (AWS S3, MinIO, Ceph RGW,
// Garage...), path-style, for the caches nodes share (F27): GET into
// memory or a file, PUT from memory or a file. Every transfer is bounded
// in time and size and may be stopped; nothing follows redirects. Calls
// block: they run on Offload's threads, never on the event loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include <sandbox/result.h>

#include "daemon/sigv4.h"

namespace sandbox::daemon {

// "http(s)://HOST[:PORT]/BUCKET[/PREFIX]", split and checked: a bucket
// name as S3 allows it, a prefix of safe characters, no "." or ".." segment.
struct StoreUrl {
  bool https = false;
  std::string authority;  // HOST[:PORT] as written: the Host header
  std::string base;       // "/BUCKET[/PREFIX]", no trailing '/'
};
Result<StoreUrl> parse_store_url(std::string_view url);

// An AWS-style credentials file: "aws_access_key_id = ..." and
// "aws_secret_access_key = ..." lines ("[section]" lines and '#' comments
// ignored); both are required.
Result<SigV4Credentials> parse_store_credentials(std::string_view text);
Result<SigV4Credentials> read_store_credentials(const std::string& path);

struct ObjectStoreOptions {
  StoreUrl url;
  std::string region = "us-east-1";
  SigV4Credentials credentials;  // empty: requests go unsigned
  uint32_t timeout_ms = 120'000;  // a whole transfer, connecting included
};

class ObjectStore {
 public:
  explicit ObjectStore(ObjectStoreOptions options);

  // `name` is below the URL's prefix ("layers/py-....layer"). Errors:
  // not_found (404), capacity (more than `max_bytes`), timeout,
  // communication (anything else, the HTTP status or curl's words).
  Result<std::string> get(const std::string& name, size_t max_bytes, const std::atomic<bool>& stop) const;
  // Into `fd` (written from its current offset); returns the bytes written.
  Result<uint64_t> get_to_fd(const std::string& name, int fd, uint64_t max_bytes, const std::atomic<bool>& stop) const;
  // `sha256`: the body's, sent as x-amz-content-sha256 (signed, and checked
  // by S3 itself). `fd` is read from offset 0 for `size` bytes.
  Result<void> put(const std::string& name, std::string_view data, const std::atomic<bool>& stop) const;
  Result<void> put_fd(const std::string& name, int fd, uint64_t size, const std::string& sha256,
                      const std::atomic<bool>& stop) const;
  // "http://host:port/bucket/prefix/name", for logs.
  std::string url_of(const std::string& name) const;

 private:
  struct Body;
  struct Sink;
  Result<void> transfer(const std::string& method, const std::string& name, Body* body, Sink* sink,
                        const std::atomic<bool>& stop) const;
  ObjectStoreOptions options_;
};

}  // namespace sandbox::daemon
