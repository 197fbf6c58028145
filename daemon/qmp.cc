#include "daemon/qmp.h"

#include <sys/socket.h>

#include <cstring>

namespace sandbox::daemon {
namespace {

// A reply line longer than this is not QEMU's.
constexpr size_t kMaxLineBytes = 64 << 10;

// One message with a descriptor attached (SCM_RIGHTS).
bool send_with_fd(int socket, const std::string& data, int fd) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  return ::sendmsg(socket, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
}

}  // namespace

Result<std::unique_ptr<QmpClient>> QmpClient::open(uv_loop_t* loop, unique_fd socket) {
  auto q = std::unique_ptr<QmpClient>(new QmpClient());
  q->pipe_ = UvHandle<uv_pipe_t>::make(q.get(), [&](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
  if (!q->pipe_) return Error::make(ErrorCode::internal, "cannot create a QMP handle");
  q->fd_ = socket.get();
  if (int rc = uv_pipe_open(q->pipe_.get(), socket.get()); rc != 0) return uv_error("uv_pipe_open", rc);
  socket.release();
  uv_read_start(reinterpret_cast<uv_stream_t*>(q->pipe_.get()), uv_alloc_buffer,
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                  std::unique_ptr<char[]> owned(buf->base);
                  auto* self = owner_of<QmpClient>(s);
                  if (!self) return;
                  if (n > 0) return self->on_bytes({buf->base, static_cast<size_t>(n)});
                  if (n < 0) {
                    uv_read_stop(s);
                    self->fail_all(Error::make(ErrorCode::communication, "QMP channel closed"));
                  }
                });
  // Capabilities negotiation goes first; its answer matters to nobody.
  q->execute("qmp_capabilities", "", [](Result<JsonValue>) {});
  return q;
}

QmpClient::~QmpClient() = default;

void QmpClient::execute(std::string_view command, std::string_view arguments, Reply reply, int fd) {
  std::string line = "{\"execute\":\"" + std::string(command) + "\"";
  if (!arguments.empty()) line += ",\"arguments\":" + std::string(arguments);
  line += "}\n";
  bool sent = fd >= 0 ? send_with_fd(fd_, line, fd)
                      : uv_write_string(reinterpret_cast<uv_stream_t*>(pipe_.get()), std::move(line)) == 0;
  if (!sent) return reply(Error::sys("sending a QMP command", command));
  pending_.push_back(std::move(reply));
}

void QmpClient::on_bytes(std::string_view bytes) {
  buffer_.append(bytes);
  size_t nl;
  while ((nl = buffer_.find('\n')) != std::string::npos) {
    std::string line = buffer_.substr(0, nl);
    buffer_.erase(0, nl + 1);
    on_line(line);
  }
  if (buffer_.size() > kMaxLineBytes) {
    buffer_.clear();
    fail_all(Error::make(ErrorCode::communication, "QEMU sent an oversize QMP line"));
  }
}

void QmpClient::on_line(std::string_view line) {
  auto v = parse_json(line, {kMaxLineBytes, 16, 4096});
  if (!v || !v->is(JsonValue::Type::object))
    return fail_all(Error::make(ErrorCode::communication, "QEMU sent malformed QMP: " + std::string(line.substr(0, 200))));
  if (!greeted_) {
    greeted_ = v->get("QMP") != nullptr;
    return;
  }
  const JsonValue* ret = v->get("return");
  const JsonValue* err = v->get("error");
  if (!ret && !err) return;  // an event
  if (pending_.empty()) return;
  auto reply = std::move(pending_.front());
  pending_.pop_front();
  if (ret) return reply(*ret);
  std::string desc = "QMP error";
  if (const auto* d = err->get("desc"); d && d->string()) desc = std::string(*d->string());
  reply(Error::make(ErrorCode::communication, desc));
}

void QmpClient::fail_all(const Error& e) {
  auto pending = std::exchange(pending_, {});
  for (auto& r : pending) r(e);
}

}  // namespace sandbox::daemon
