// File requests of a session, served in the guest: every path is resolved
// beneath the user's home (openat2 RESOLVE_BENEATH, no magic links, no
// mount crossing) with the filesystem identity of the unprivileged user, so
// a symlink planted by user code cannot lead outside and the agent never
// touches anything the user could not.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol.h"
#include <sandbox/result.h>
#include "common/unique_fd.h"

namespace sandbox::agent {

class FileService {
 public:
  using Send = std::function<Result<void>(const proto::Message&)>;
  explicit FileService(Send send) : send_(std::move(send)) {}
  ~FileService() { abort_upload(); }

  // Each answers with FileDone, FileList or ErrorReply through `send`; a
  // false result means the host channel failed.
  Result<void> on_write(const proto::FileWrite& m);
  Result<void> on_chunk(const proto::FileChunk& m);
  Result<void> on_read(const proto::FileRead& m);
  Result<void> on_list(const proto::FileListRequest& m);

 private:
  struct Upload {
    uint64_t id = 0;
    unique_fd dir;  // parent directory (O_PATH)
    unique_fd file;
    std::string temp, name;
    uint64_t size = 0, received = 0;
    bool executable = false;
    std::vector<std::string> created_dirs;  // by this write; removed if it fails
  };
  Result<void> finish_upload();
  Result<void> fail_upload(Error e);
  void abort_upload();

  Send send_;
  std::optional<Upload> upload_;
  uint64_t failed_id_ = 0;  // chunks of a failed upload are dropped
};

}  // namespace sandbox::agent
