// Small I/O and ownership helpers shared by daemon, agent, libsandbox and
// the tests: EINTR-safe whole writes and reads, a directory handle, hex.
#pragma once

#include <dirent.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>

namespace sandbox {

// Writes all of `data`, retrying on EINTR (and EAGAIN, by waiting for the
// descriptor). Sockets are written with MSG_NOSIGNAL: a closed peer is an
// EPIPE error, never a signal. `what` names the descriptor in errors.
Result<void> write_all(int fd, std::string_view data, std::string_view what = "descriptor");
// Reads until end of file, or fails past `max` bytes.
Result<std::string> read_all(int fd, size_t max, std::string_view what = "descriptor");
// A whole small file (procfs, sysfs, config), at most `max` bytes.
Result<std::string> read_file(const std::string& path, size_t max = 1 << 20);

// Lowercase hex of raw bytes.
std::string to_hex(std::string_view bytes);

// An open directory; the destructor closes it.
class Dir {
 public:
  static Result<Dir> open(const std::string& path);
  // Takes over `fd` (closed with the directory, or on failure).
  static Result<Dir> adopt(int fd, std::string_view what);
  Dir(Dir&& other) noexcept : dir_(std::exchange(other.dir_, nullptr)) {}
  Dir& operator=(Dir&& other) noexcept;
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;
  ~Dir();

  // The next entry other than "." and "..", or nullptr at the end.
  const dirent* next();
  // Every remaining name, "." and ".." left out.
  std::vector<std::string> names();
  // For *at() calls relative to the directory.
  int fd() const { return ::dirfd(dir_); }

 private:
  explicit Dir(DIR* dir) : dir_(dir) {}
  DIR* dir_ = nullptr;
};

}  // namespace sandbox
