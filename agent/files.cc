#include "agent/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/fsuid.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include <sandbox/limits.h>

#include "agent/system.h"
#include "common/files.h"
#include "common/io.h"

namespace sandbox::agent {
namespace {

// For the lifetime of this object, file access is checked as the user:
// with a non-zero fsuid the kernel drops CAP_DAC_OVERRIDE and friends from
// the effective set, and restores them when fsuid returns to 0.
class AsUser {
 public:
  AsUser() {
    ::setfsgid(kUserGid);
    ::setfsuid(kUserUid);
  }
  ~AsUser() {
    ::setfsuid(0);
    ::setfsgid(0);
  }
  AsUser(const AsUser&) = delete;
  AsUser& operator=(const AsUser&) = delete;
};

// Why a path operation failed, in the shared taxonomy.
Error path_error(std::string_view op, std::string_view path, int err) {
  std::string p(path);
  switch (err) {
    case ENOENT:
      return Error::make(ErrorCode::not_found, "'" + p + "' does not exist");
    case EXDEV:
    case ELOOP:
      return Error::make(ErrorCode::permission_denied, "'" + p + "' leads outside the session's home");
    case EACCES:
    case EPERM:
      return Error::make(ErrorCode::permission_denied, "'" + p + "': permission denied");
    case ENOSPC:
    case EDQUOT:
      return Error::make(ErrorCode::capacity, "no space left in the session's home for '" + p + "'");
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
      return Error::make(ErrorCode::invalid_argument, "'" + p + "': " + std::strerror(err));
    default:
      return Error::make(ErrorCode::guest_error, std::string(op) + " '" + p + "': " + std::strerror(err));
  }
}

// openat2 beneath the home directory; "" is home itself.
int open_beneath(std::string_view path, uint64_t flags) {
  static int home = ::open(std::string(kUserHome).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  std::string p = path.empty() ? "." : std::string(path);
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  long fd;
  do fd = ::syscall(SYS_openat2, home, p.c_str(), &how, sizeof how);
  while (fd < 0 && errno == EINTR);
  return static_cast<int>(fd);
}

// The directory part and the last name of a validated path.
std::pair<std::string, std::string> split(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto slash = path.rfind('/');
  if (slash == std::string_view::npos) return {"", std::string(path)};
  return {std::string(path.substr(0, slash)), std::string(path.substr(slash + 1))};
}

// Opens `dir` beneath home, creating missing directories on the way; the
// ones it created are appended to *created, outermost first.
Result<unique_fd> make_dirs(const std::string& dir, std::vector<std::string>* created) {
  size_t pos = 0;
  for (;;) {
    size_t end = dir.find('/', pos);
    std::string prefix = dir.substr(0, end);
    unique_fd fd(open_beneath(prefix, O_PATH | O_DIRECTORY));
    if (!fd && errno == ENOENT) {
      auto [parent, name] = split(prefix);
      unique_fd p(open_beneath(parent, O_PATH | O_DIRECTORY));
      if (!p) return path_error("open", parent, errno);
      if (::mkdirat(p.get(), name.c_str(), 0755) == 0)
        created->push_back(prefix);
      else if (errno != EEXIST)
        return path_error("mkdir", prefix, errno);
      fd.reset(open_beneath(prefix, O_PATH | O_DIRECTORY));
    }
    if (!fd) return path_error("open", prefix, errno);
    if (end == std::string::npos) return fd;
    pos = end + 1;
  }
}

// Removes directories a failed write created, innermost first; one that
// something else has since filled stays.
void remove_dirs(const std::vector<std::string>& created) {
  for (auto it = created.rbegin(); it != created.rend(); ++it) {
    auto [parent, name] = split(*it);
    unique_fd p(open_beneath(parent, O_PATH | O_DIRECTORY));
    if (p) ::unlinkat(p.get(), name.c_str(), AT_REMOVEDIR);
  }
}

}  // namespace

Result<void> FileService::on_write(const proto::FileWrite& m) {
  abort_upload();
  auto refuse = [&](Error e) {
    failed_id_ = m.id;
    return send_(proto::ErrorReply{m.id, e.code, e.message});
  };
  if (auto v = validate_guest_path(m.path, false); !v) return refuse(v.error());
  if (m.size > limits::kMaxFileBytes) return refuse(Error::make(ErrorCode::invalid_argument, "file too large"));
  auto [dir, name] = split(m.path);
  if (name == "." || name == "..") return refuse(Error::make(ErrorCode::invalid_argument, "path does not name a file"));
  AsUser as_user;
  Upload up;
  up.id = m.id;
  up.size = m.size;
  up.executable = m.executable;
  up.name = name;
  if (dir.empty()) {
    up.dir.reset(open_beneath("", O_PATH | O_DIRECTORY));
    if (!up.dir) return refuse(path_error("open", "home", errno));
  } else {
    auto d = make_dirs(dir, &up.created_dirs);
    if (!d) {
      remove_dirs(up.created_dirs);
      return refuse(std::move(d).error());
    }
    up.dir = std::move(*d);
  }
  // Written beside its final name and renamed over it when complete, so no
  // reader ever sees a partial file.
  uint64_t nonce = 0;
  (void)!::getrandom(&nonce, sizeof nonce, 0);
  char temp[64];
  std::snprintf(temp, sizeof temp, ".sandbox-upload-%016llx", static_cast<unsigned long long>(nonce));
  up.temp = temp;
  up.file.reset(::openat(up.dir.get(), temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!up.file) {
    int err = errno;
    remove_dirs(up.created_dirs);
    return refuse(path_error("create", m.path, err));
  }
  upload_ = std::move(up);
  if (upload_->size == 0) return finish_upload();
  return ok();
}

Result<void> FileService::on_chunk(const proto::FileChunk& m) {
  if (!upload_ || upload_->id != m.id) {
    if (m.id == failed_id_) return ok();
    return send_(proto::ErrorReply{m.id, ErrorCode::invalid_argument, "file chunk for no transfer in progress"});
  }
  std::string data;
  if (auto r = decompress_chunk(m.data, &data); !r) return fail_upload(std::move(r).error());
  if (upload_->received + data.size() > upload_->size)
    return fail_upload(Error::make(ErrorCode::invalid_argument, "more data than the declared file size"));
  AsUser as_user;
  if (auto w = write_all(upload_->file.get(), data, upload_->name); !w)
    return fail_upload(path_error("write", upload_->name, w.error().sys_errno));
  upload_->received += data.size();
  if (upload_->received == upload_->size) return finish_upload();
  return ok();
}

Result<void> FileService::finish_upload() {
  AsUser as_user;
  auto& up = *upload_;
  if (::fchmod(up.file.get(), up.executable ? 0755 : 0644) != 0) return fail_upload(path_error("chmod", up.name, errno));
  up.file.reset();
  if (::renameat(up.dir.get(), up.temp.c_str(), up.dir.get(), up.name.c_str()) != 0)
    return fail_upload(path_error("rename", up.name, errno));
  uint64_t id = up.id, size = up.size;
  upload_.reset();
  return send_(proto::FileDone{id, size});
}

Result<void> FileService::fail_upload(Error e) {
  uint64_t id = upload_ ? upload_->id : 0;
  abort_upload();
  failed_id_ = id;
  return send_(proto::ErrorReply{id, e.code, e.message});
}

void FileService::abort_upload() {
  if (!upload_) return;
  AsUser as_user;
  upload_->file.reset();
  ::unlinkat(upload_->dir.get(), upload_->temp.c_str(), 0);
  upload_->dir.reset();
  remove_dirs(upload_->created_dirs);
  upload_.reset();
}

Result<void> FileService::on_read(const proto::FileRead& m) {
  auto refuse = [&](Error e) { return send_(proto::ErrorReply{m.id, e.code, e.message}); };
  if (auto v = validate_guest_path(m.path, false); !v) return refuse(v.error());
  unique_fd fd;
  struct stat st{};
  {
    AsUser as_user;
    // O_NONBLOCK: a FIFO planted by user code must not hang the agent.
    fd.reset(open_beneath(m.path, O_RDONLY | O_NONBLOCK | O_NOCTTY));
    if (!fd) return refuse(path_error("open", m.path, errno));
  }
  if (::fstat(fd.get(), &st) != 0) return refuse(path_error("stat", m.path, errno));
  if (!S_ISREG(st.st_mode)) return refuse(Error::make(ErrorCode::invalid_argument, "'" + m.path + "' is not a regular file"));
  if (static_cast<uint64_t>(st.st_size) > limits::kMaxFileBytes)
    return refuse(Error::make(ErrorCode::invalid_argument, "'" + m.path + "' is " + std::to_string(st.st_size) +
                                                           " bytes; the limit is " + std::to_string(limits::kMaxFileBytes)));
  // What the file holds now, up to the size it had when opened.
  uint64_t total = 0, want = static_cast<uint64_t>(st.st_size);
  std::string buf(limits::kFileChunkBytes, '\0');
  while (total < want) {
    size_t piece = static_cast<size_t>(std::min<uint64_t>(want - total, buf.size()));
    ssize_t n = ::read(fd.get(), buf.data(), piece);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return refuse(path_error("read", m.path, errno));
    if (n == 0) break;
    if (auto r = send_(proto::FileChunk{m.id, compress_chunk({buf.data(), static_cast<size_t>(n)})}); !r) return r;
    total += static_cast<uint64_t>(n);
  }
  return send_(proto::FileDone{m.id, total});
}

Result<void> FileService::on_list(const proto::FileListRequest& m) {
  auto refuse = [&](Error e) { return send_(proto::ErrorReply{m.id, e.code, e.message}); };
  if (auto v = validate_guest_path(m.path, true); !v) return refuse(v.error());
  AsUser as_user;
  int fd = open_beneath(m.path, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return refuse(path_error("open", m.path.empty() ? "." : m.path, errno));
  auto dir = Dir::adopt(fd, m.path);
  if (!dir) return refuse(path_error("opendir", m.path, dir.error().sys_errno));
  proto::FileList list;
  list.id = m.id;
  auto& entries = list.listing.entries;
  while (const dirent* e = dir->next()) {
    if (entries.size() == limits::kMaxListEntries) {
      list.listing.truncated = true;
      break;
    }
    struct stat st{};
    if (::fstatat(dir->fd(), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    entries.push_back({e->d_name, S_ISDIR(st.st_mode), S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0});
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return send_(list);
}

}  // namespace sandbox::agent
