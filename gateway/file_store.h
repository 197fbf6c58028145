// Files a run left in /tmp/output, held for download under a random token
// until they expire. Bounded in bytes overall; expired entries are swept
// on every call.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace sandbox::gateway {

class FileStore {
 public:
  using Clock = std::chrono::steady_clock;
  FileStore(uint64_t max_bytes, std::chrono::seconds ttl) : max_bytes_(max_bytes), ttl_(ttl) {}

  struct File {
    std::string name;
    std::string data;
    Clock::time_point expires;
  };
  // A fresh 128-bit token for `data`, or nullopt when the store is full.
  std::optional<std::string> put(std::string name, std::string data);
  // The file under `token`, unless unknown or expired.
  std::optional<File> get(const std::string& token);
  std::chrono::seconds ttl() const { return ttl_; }
  uint64_t bytes() const;

 private:
  void sweep(Clock::time_point now);
  mutable std::mutex mu_;
  uint64_t max_bytes_;
  std::chrono::seconds ttl_;
  uint64_t bytes_ = 0;
  std::map<std::string, File> files_;
};

}  // namespace sandbox::gateway
