// The D-Bus transport: org.sandboxd1 on the system bus (or any bus address),
// driven by sd-bus inside the daemon's libuv loop. It only marshals: each
// method call becomes one request to the service (which authorizes,
// validates and runs it), and its answers become the reply and signals.
// The interface is described once, in dbus/org.sandboxd1.Manager.xml.
#pragma once

#include <systemd/sd-bus.h>
#include <uv.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include <sandbox/result.h>

#include "daemon/service.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

inline constexpr const char* kBusName = "org.sandboxd1";
inline constexpr const char* kObjectPath = "/org/sandboxd1";
inline constexpr const char* kInterface = "org.sandboxd1.Manager";

// "org.sandboxd1.Error.VMBootFailed" for vm_boot_failed, and so on.
std::string dbus_error_name(ErrorCode code);

// Owners of sd-bus references.
template <class T, T* (*Unref)(T*)>
class SdRef {
 public:
  SdRef() = default;
  explicit SdRef(T* p) : p_(p) {}
  SdRef(SdRef&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  SdRef& operator=(SdRef&& o) noexcept {
    if (this != &o) reset(std::exchange(o.p_, nullptr));
    return *this;
  }
  SdRef(const SdRef&) = delete;
  SdRef& operator=(const SdRef&) = delete;
  ~SdRef() { reset(); }
  T* get() const { return p_; }
  T** out() {
    reset();
    return &p_;
  }
  void reset(T* p = nullptr) {
    if (p_) Unref(p_);
    p_ = p;
  }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  T* p_ = nullptr;
};
using BusRef = SdRef<sd_bus, sd_bus_flush_close_unref>;
using SlotRef = SdRef<sd_bus_slot, sd_bus_slot_unref>;
using MessageRef = SdRef<sd_bus_message, sd_bus_message_unref>;
using CredsRef = SdRef<sd_bus_creds, sd_bus_creds_unref>;

class DbusCall;

class DbusService {
 public:
  DbusService(uv_loop_t* loop, Service& service);
  ~DbusService();
  DbusService(const DbusService&) = delete;
  DbusService& operator=(const DbusService&) = delete;

  // "system" for the system bus, else a bus address ("unix:path=...").
  Result<void> start(const std::string& bus);
  void stop();

  // sd-bus entry points (C callbacks; they never let an exception out).
  static int on_method(sd_bus_message* m, void* userdata, sd_bus_error* error);
  static int on_property(sd_bus* bus, const char* path, const char* interface, const char* property,
                         sd_bus_message* reply, void* userdata, sd_bus_error* error);

 private:
  friend class DbusCall;
  int method(sd_bus_message* m, sd_bus_error* error);
  int property(const char* name, sd_bus_message* reply, sd_bus_error* error);
  int list_sessions(sd_bus_message* m, const Caller& caller, uint64_t id, sd_bus_error* error);
  int metrics(sd_bus_message* m, const Caller& caller, uint64_t id, sd_bus_error* error);
  int drain(sd_bus_message* m, const Caller& caller, uint64_t id, sd_bus_error* error);
  // The sender's uid, authorized like a socket peer; < 0 refused.
  int identify(sd_bus_message* m, Caller* caller, sd_bus_error* error);
  // Runs sd-bus until it has nothing to do, then re-arms the poll and timer.
  void process();
  void rearm();
  void finished(DbusCall* call);

  uv_loop_t* loop_;
  Service& service_;
  BusRef bus_;
  SlotRef slot_;
  UvHandle<uv_poll_t> poll_;
  UvHandle<uv_timer_t> timer_;
  std::map<DbusCall*, std::shared_ptr<DbusCall>> calls_;
  Deferred later_;
  uint64_t next_request_ = 1;
  // Properties read while sd-bus processes one message come from one status.
  std::optional<DaemonStatus> status_;
};

}  // namespace sandbox::daemon
