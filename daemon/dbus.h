// The D-Bus transport: org.sandboxd1 on the system bus (or any bus address),
// driven by sd-bus inside the daemon's libuv loop. Like the socket, it only
// validates, authorizes, calls the Manager and maps errors. The interface is
// described once, in dbus/org.sandboxd1.Manager.xml.
#pragma once

#include <systemd/sd-bus.h>
#include <uv.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/control_socket.h"
#include "daemon/manager.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

inline constexpr const char* kBusName = "org.sandboxd1";
inline constexpr const char* kObjectPath = "/org/sandboxd1";
inline constexpr const char* kInterface = "org.sandboxd1.Manager";

// "org.sandboxd1.Error.VmBootFailed" for vm_boot_failed, and so on.
std::string dbus_error_name(ErrorCode code);

class DbusCall;

class DbusService {
 public:
  // sd-bus entry points (C callbacks; they never let an exception out).
  static int on_run_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error);
  static int on_create_session_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error);
  static int on_session_exec_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error);
  static int on_close_session_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error);
  static int on_list_sessions_thunk(sd_bus_message* m, void* userdata, sd_bus_error* error);
  static int on_property_thunk(sd_bus* bus, const char* path, const char* interface, const char* property,
                               sd_bus_message* reply, void* userdata, sd_bus_error* error);

  DbusService(uv_loop_t* loop, Manager& manager, AccessPolicy policy);
  ~DbusService();
  DbusService(const DbusService&) = delete;
  DbusService& operator=(const DbusService&) = delete;

  // "system" for the system bus, else a bus address ("unix:path=...").
  Result<void> start(const std::string& bus);
  void stop();

 private:
  friend class DbusCall;
  // The sender's uid and groups, checked like the socket's peer; < 0 refused.
  int authorize(sd_bus_message* m, Caller* caller, sd_bus_error* error);
  int run(sd_bus_message* m, sd_bus_error* error);
  int create_session(sd_bus_message* m, sd_bus_error* error);
  // SessionExec (exec) or CloseSession.
  int session_call(sd_bus_message* m, bool exec, sd_bus_error* error);
  int list_sessions(sd_bus_message* m, sd_bus_error* error);
  int property(const char* name, sd_bus_message* reply, sd_bus_error* error);
  // Runs sd-bus until it has nothing to do, then re-arms the poll and timer.
  void process();
  void rearm();
  void finished(DbusCall* call);

  uv_loop_t* loop_;
  Manager& manager_;
  AccessPolicy policy_;
  sd_bus* bus_ = nullptr;
  sd_bus_slot* slot_ = nullptr;
  UvHandle<uv_poll_t> poll_;
  UvHandle<uv_timer_t> timer_;
  UvHandle<uv_timer_t> reap_;
  std::map<DbusCall*, std::shared_ptr<DbusCall>> calls_;
  std::vector<std::shared_ptr<DbusCall>> done_;
  // Request ids of session calls made over the bus.
  uint64_t next_request_ = 0;
};

}  // namespace sandbox::daemon
