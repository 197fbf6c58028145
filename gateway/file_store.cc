#include "gateway/file_store.h"

#include <sys/random.h>

#include <cstdio>

namespace sandbox::gateway {

std::optional<std::string> FileStore::put(std::string name, std::string data) {
  unsigned char raw[16];
  if (::getrandom(raw, sizeof raw, 0) != sizeof raw) return std::nullopt;
  std::string token;
  for (unsigned char c : raw) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", c);
    token += hex;
  }
  std::lock_guard lock(mu_);
  auto now = Clock::now();
  sweep(now);
  if (bytes_ + data.size() > max_bytes_) return std::nullopt;
  bytes_ += data.size();
  files_[token] = File{std::move(name), std::move(data), now + ttl_};
  return token;
}

std::optional<FileStore::File> FileStore::get(const std::string& token) {
  std::lock_guard lock(mu_);
  sweep(Clock::now());
  auto it = files_.find(token);
  if (it == files_.end()) return std::nullopt;
  return it->second;
}

uint64_t FileStore::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

void FileStore::sweep(Clock::time_point now) {
  for (auto it = files_.begin(); it != files_.end();) {
    if (it->second.expires <= now) {
      bytes_ -= it->second.data.size();
      it = files_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace sandbox::gateway
