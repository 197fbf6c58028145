// A QMP client on the daemon's loop: commands in order, each answered by a
// callback with its "return" value or its error. The greeting and
// qmp_capabilities are handled here; asynchronous events are skipped.
// Replies are parsed as JSON (bounded: QEMU runs confined and is not
// trusted). systemd's qmp-client.h is the model.
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <string>

#include <sandbox/result.h>

#include "common/json_parse.h"
#include "common/unique_fd.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

class QmpClient {
 public:
  using Reply = std::function<void(Result<JsonValue>)>;

  // Takes the daemon's end of QEMU's QMP socket.
  static Result<std::unique_ptr<QmpClient>> open(uv_loop_t* loop, unique_fd socket);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // `arguments` is a JSON object or empty. With `fd` >= 0, the descriptor
  // travels with the command (SCM_RIGHTS), as getfd and add-fd want.
  void execute(std::string_view command, std::string_view arguments, Reply reply, int fd = -1);

 private:
  QmpClient() = default;
  void on_bytes(std::string_view bytes);
  void on_line(std::string_view line);
  void fail_all(const Error& e);

  UvHandle<uv_pipe_t> pipe_;
  int fd_ = -1;
  std::string buffer_;
  bool greeted_ = false;
  std::deque<Reply> pending_;
};

}  // namespace sandbox::daemon
