// One D-Bus method call in flight: the service's peer for it, answering
// the caller when its request ends and streaming its output as signals to
// the caller alone. The reply's details are derived from RunResult's table.
#pragma once

#include <systemd/sd-bus.h>

#include <memory>
#include <string>

#include "daemon/dbus.h"

namespace sandbox::daemon {

struct Method {  // the interface's methods, and what each stands for
  const char* name;
  enum class Kind { run, create, exec, close, list, metrics, network, drain } kind;
};

class DbusCall : public Sink, public std::enable_shared_from_this<DbusCall> {
 public:
  DbusCall(DbusService* service, sd_bus_message* call, Method::Kind kind, bool stream, uint64_t request);
  ~DbusCall() override;
  void begin(const Caller& caller, proto::Message&& request);
  void deliver(proto::Message&& m) override;

 private:
  void signal(const proto::Output& out);
  int reply_result(const RunResult& r);

  DbusService* service_;
  MessageRef call_;
  std::string sender_;
  Method::Kind kind_;
  bool stream_;
  uint64_t request_;
  bool done_ = false;
  std::shared_ptr<Service::Peer> peer_;
};

}  // namespace sandbox::daemon
