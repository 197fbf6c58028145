#include "common/io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/unique_fd.h"

namespace sandbox {

Result<void> write_all(int fd, std::string_view data, std::string_view what) {
  bool socket = true;
  while (!data.empty()) {
    ssize_t n = socket ? ::send(fd, data.data(), data.size(), MSG_NOSIGNAL) : ::write(fd, data.data(), data.size());
    if (n < 0 && errno == ENOTSOCK && socket) {
      socket = false;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, -1);
      continue;
    }
    if (n < 0) return Error::sys("write", what);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return ok();
}

Result<std::string> read_all(int fd, size_t max, std::string_view what) {
  std::string out;
  char buf[16 << 10];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("read", what);
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > max)
      return Error::make(ErrorCode::invalid_argument, "'" + std::string(what) + "' is longer than " +
                                                          std::to_string(max) + " bytes");
    out.append(buf, static_cast<size_t>(n));
  }
}

Result<std::string> read_file(const std::string& path, size_t max) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::sys("open", path);
  return read_all(fd.get(), max, path);
}

std::string to_hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) out += {kHex[c >> 4], kHex[c & 15]};
  return out;
}

Result<Dir> Dir::open(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) return Error::sys("opendir", path);
  return Dir(d);
}

Result<Dir> Dir::adopt(int fd, std::string_view what) {
  DIR* d = ::fdopendir(fd);
  if (!d) {
    auto e = Error::sys("fdopendir", what);
    ::close(fd);
    return e;
  }
  return Dir(d);
}

Dir& Dir::operator=(Dir&& other) noexcept {
  if (this != &other) {
    if (dir_) ::closedir(dir_);
    dir_ = std::exchange(other.dir_, nullptr);
  }
  return *this;
}

Dir::~Dir() {
  if (dir_) ::closedir(dir_);
}

const dirent* Dir::next() {
  while (dirent* e = ::readdir(dir_)) {
    std::string_view name = e->d_name;
    if (name != "." && name != "..") return e;
  }
  return nullptr;
}

std::vector<std::string> Dir::names() {
  std::vector<std::string> out;
  while (const dirent* e = next()) out.emplace_back(e->d_name);
  return out;
}

}  // namespace sandbox
