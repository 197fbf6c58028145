#include "daemon/dbus_call.h"

#include <cstring>

#include <sandbox/json.h>

#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

// One member of the details dictionary, typed as the field is.
template <class M>
int append_detail(sd_bus_message* m, const char* key, const M& v) {
  if constexpr (std::is_same_v<M, bool>) return sd_bus_message_append(m, "{sv}", key, "b", static_cast<int>(v));
  else if constexpr (std::is_same_v<M, int32_t>) return sd_bus_message_append(m, "{sv}", key, "i", v);
  else if constexpr (std::is_same_v<M, uint32_t>) return sd_bus_message_append(m, "{sv}", key, "u", v);
  else if constexpr (std::is_same_v<M, uint64_t>) return sd_bus_message_append(m, "{sv}", key, "t", v);
  else if constexpr (std::is_same_v<M, std::string>) return sd_bus_message_append(m, "{sv}", key, "s", v.c_str());
  // Lists of records travel as their JSON text ("s"): a{sv} has no
  // natural place for them, and every client already reads the JSON form.
  else if constexpr (std::is_same_v<M, std::vector<ExposedPort>>) {
    std::string j = "[";
    for (size_t i = 0; i < v.size(); ++i) j += (i ? "," : "") + to_json(v[i]);
    return sd_bus_message_append(m, "{sv}", key, "s", (j + "]").c_str());
  } else if constexpr (std::is_same_v<M, NetworkStats> || std::is_same_v<M, LayerUse>)
    return sd_bus_message_append(m, "{sv}", key, "s", to_json(v).c_str());
  else if constexpr (schema::NamedEnum<M>)
    return sd_bus_message_append(m, "{sv}", key, "s", std::string(schema::EnumNames<M>::name(v)).c_str());
  else static_assert(sizeof(M) == 0, "a result field D-Bus cannot carry");
}

// A result's fields as a{sv} members, derived from its table: nested
// structs (timing) are flattened; the fields that are the method's own
// return values are left out.
template <class T>
int append_details(sd_bus_message* m, const T& v) {
  int rc = 0;
  schema::for_each_field<T>([&](const auto& f) {
    using M = typename std::decay_t<decltype(f)>::Member;
    if (rc < 0 || f.key == "stdout" || f.key == "stderr" || f.key == "exit_code") return;
    if constexpr (schema::Described<M> && !std::is_same_v<M, NetworkStats> && !std::is_same_v<M, LayerUse>)
      rc = append_details(m, v.*f.member);
    else
      rc = append_detail(m, std::string(f.key).c_str(), v.*f.member);
  });
  return rc;
}

}  // namespace

DbusCall::DbusCall(DbusService* service, sd_bus_message* call, Method::Kind kind, bool stream, uint64_t request)
    : service_(service), call_(sd_bus_message_ref(call)), kind_(kind), stream_(stream), request_(request) {
  if (const char* s = sd_bus_message_get_sender(call)) sender_ = s;
}

DbusCall::~DbusCall() {
  if (peer_) service_->service_.disconnect(*peer_);
}

void DbusCall::begin(const Caller& caller, proto::Message&& request) {
  peer_ = service_->service_.connect(caller, weak_from_this());
  service_->service_.handle(*peer_, std::move(request));
}

void DbusCall::deliver(proto::Message&& m) {
  if (done_) return;
  if (auto* out = std::get_if<proto::Output>(&m)) return signal(*out);
  done_ = true;
  int rc = 0;
  if (auto* err = std::get_if<proto::ErrorReply>(&m)) {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    sd_bus_error_set(&e, dbus_error_name(err->code).c_str(), err->message.c_str());
    rc = sd_bus_reply_method_error(call_.get(), &e);
    sd_bus_error_free(&e);
  } else if (auto* fin = std::get_if<proto::Finished>(&m)) {
    rc = reply_result(fin->result);
  } else if (auto* list = std::get_if<proto::SessionList>(&m); list && kind_ == Method::Kind::create) {
    rc = list->sessions.size() == 1 ? sd_bus_reply_method_return(call_.get(), "s", list->sessions[0].id.c_str())
                                    : -EPROTO;
  } else if (std::holds_alternative<proto::SessionList>(m) && kind_ == Method::Kind::network) {
    rc = sd_bus_reply_method_return(call_.get(), "");
  } else if (std::holds_alternative<proto::Ack>(m)) {
    rc = sd_bus_reply_method_return(call_.get(), "");
  } else {
    rc = -EPROTO;
  }
  if (rc < 0) log_warning(std::string("D-Bus: cannot send a reply: ") + std::strerror(-rc));
  service_->rearm();
  service_->finished(this);
}

void DbusCall::signal(const proto::Output& out) {
  if (!stream_ || sender_.empty()) return;
  MessageRef sig;
  if (sd_bus_message_new_signal(service_->bus_.get(), sig.out(), kObjectPath, kInterface, "Output") < 0) return;
  if (sd_bus_message_set_destination(sig.get(), sender_.c_str()) < 0 ||
      sd_bus_message_append(sig.get(), "ts", request_, std::string(stream_name(out.stream)).c_str()) < 0 ||
      sd_bus_message_append_array(sig.get(), 'y', out.data.data(), out.data.size()) < 0)
    return;
  sd_bus_send(service_->bus_.get(), sig.get(), nullptr);
  service_->rearm();
}

int DbusCall::reply_result(const RunResult& r) {
  MessageRef reply;
  int rc = sd_bus_message_new_method_return(call_.get(), reply.out());
  if (rc >= 0) rc = sd_bus_message_append(reply.get(), "i", r.exit_code);
  if (rc >= 0) rc = sd_bus_message_append_array(reply.get(), 'y', r.stdout_data.data(), r.stdout_data.size());
  if (rc >= 0) rc = sd_bus_message_append_array(reply.get(), 'y', r.stderr_data.data(), r.stderr_data.size());
  if (rc >= 0) rc = sd_bus_message_open_container(reply.get(), 'a', "{sv}");
  if (rc >= 0) rc = append_details(reply.get(), r);
  if (rc >= 0) rc = sd_bus_message_append(reply.get(), "{sv}", "request", "t", request_);
  if (rc >= 0) rc = sd_bus_message_close_container(reply.get());
  if (rc >= 0) rc = sd_bus_send(service_->bus_.get(), reply.get(), nullptr);
  return rc;
}

}  // namespace sandbox::daemon
