// SHA-256, the one digest of the daemon: image verification, snapshot
// integrity and cache keys.
#pragma once

#include <atomic>
#include <string>
#include <string_view>

#include <sandbox/result.h>

namespace sandbox::daemon {

// Lowercase hex.
std::string sha256_hex(std::string_view data);
// Of a file's contents; a missing file is not_found.
Result<std::string> sha256_file(const std::string& path);
// Of an open file's contents from its start (pread: the offset is left
// alone). With `stop`, gives up (internal, "stopped") once it is set.
Result<std::string> sha256_fd(int fd, const std::atomic<bool>* stop = nullptr);

// A digest taken piece by piece (a file streamed through a transfer).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  std::string hex();  // once: the state is spent

 private:
  struct State;
  State* state_;
};

}  // namespace sandbox::daemon
