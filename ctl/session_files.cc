#include "ctl/session_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "common/limits.h"
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
  // Written beside its name and renamed, so a failed copy leaves no half file.
  std::string temp = local + ".sandboxctl-part";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out || !out.write(data->data(), static_cast<std::streamsize>(data->size())) || !out.flush()) {
      ::unlink(temp.c_str());
      return Error::sys("write", temp);
    }
  }
  if (::rename(temp.c_str(), local.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    return Error::sys("rename", local, err);
  }
  return ok();
}

}  // namespace sandbox::ctl
