#include "ctl/session_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include <sys/random.h>

#include <cstdio>
#include <memory>

#include <sandbox/limits.h>

#include "ctl/verbs.h"

namespace sandbox::ctl {

Result<void> put_file(const Session& session, const std::string& local, const std::string& guest, bool executable) {
  std::string data;
  if (local == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    data = ss.str();
  } else {
    std::ifstream f(local, std::ios::binary);
    if (!f) return Error::sys("open", local);
    // Refuse before reading a huge file into memory.
    f.seekg(0, std::ios::end);
    auto size = f.tellg();
    if (size > static_cast<std::streamoff>(limits::kMaxFileBytes))
      return Error::make(ErrorCode::invalid_argument, "'" + local + "' is larger than 50 MB");
    f.seekg(0);
    std::ostringstream ss;
    ss << f.rdbuf();
    data = ss.str();
  }
  return session.write_file(guest, data, executable);
}

Result<void> get_file(const Session& session, const std::string& guest, std::string local) {
  auto data = session.read_file(guest);
  if (!data) return std::move(data).error();
  if (local == "-") {
    write_fd(1, *data);
    return ok();
  }
  if (local.empty()) {
    auto slash = guest.find_last_of('/');
    local = slash == std::string::npos ? guest : guest.substr(slash + 1);
  }
  // Written beside its name and renamed, so a failed copy leaves no half
  // file. The temp name is new (O_EXCL, no symlink followed): nothing that
  // already sits at a guessable name is truncated or written through.
  std::string temp;
  std::unique_ptr<FILE, int (*)(FILE*)> f(nullptr, &std::fclose);
  for (int attempt = 0; attempt < 16 && !f; ++attempt) {
    uint32_t r = 0;
    (void)::getrandom(&r, sizeof r, 0);
    temp = local + ".sandboxctl-" + std::to_string(r);
    f.reset(std::fopen(temp.c_str(), "wbxe"));  // x: O_EXCL, which never follows a link; e: O_CLOEXEC
    if (!f && errno != EEXIST) return Error::sys("open", temp);
  }
  if (!f) return Error::sys("open", temp);
  bool written = std::fwrite(data->data(), 1, data->size(), f.get()) == data->size() && std::fflush(f.get()) == 0 &&
                 ::fsync(::fileno(f.get())) == 0;
  int err = errno;
  if (std::fclose(f.release()) != 0 && written) written = false, err = errno;
  if (!written) {
    ::unlink(temp.c_str());
    return Error::sys("write", temp, err);
  }
  if (::rename(temp.c_str(), local.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    return Error::sys("rename", local, err);
  }
  return ok();
}

}  // namespace sandbox::ctl
