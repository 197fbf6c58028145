#include "daemon/audit.h"

#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

struct KindInfo {
  std::string_view name;
  std::string_view message_id;
};

// Fixed for ever: journalctl filters and alerting rules name them.
constexpr std::array<KindInfo, 8> kKinds = {{
    {"run", "cf8aaa8574ca4f67ab1fb3c854f231e6"},
    {"session_open", "6424f7725f0f4194a08b1490f1505cfe"},
    {"session_exec", "26dd9a0c837f49459a81cc569cd190ea"},
    {"session_close", "ad2839149ee54170b8aae7e14ea29b4b"},
    {"file_write", "738f8f95c510404085c9b62b44be4fe3"},
    {"file_read", "4b529b41bbc345ea938f23f5ad56e12a"},
    {"file_list", "57b64b5e61cf4651949358db719efd1c"},
    {"denial", "af76748f5f3b4cd0aa9a13d4a53b49b9"},
}};

AuditTarget g_target = AuditTarget::automatic;

bool use_journal() {
  static const bool present = ::access("/run/systemd/journal/socket", W_OK) == 0;
  if (g_target == AuditTarget::journal) return true;
  if (g_target == AuditTarget::stderr_only) return false;
  return present;
}

// Refusals a client provokes at will: at most this many per second.
constexpr uint32_t kDenialBurst = 50;
std::chrono::steady_clock::time_point g_window{};
uint32_t g_in_window = 0;
uint64_t g_suppressed = 0;

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

}  // namespace

std::string_view audit_kind_name(AuditKind kind) { return kKinds[static_cast<size_t>(kind)].name; }
std::string_view audit_message_id(AuditKind kind) { return kKinds[static_cast<size_t>(kind)].message_id; }

std::vector<std::pair<std::string, std::string>> audit_fields(const AuditEntry& e) {
  std::vector<std::pair<std::string, std::string>> f;
  std::string kind(audit_kind_name(e.kind));
  std::string what = kind + " uid=" + std::to_string(e.uid);
  if (e.language) what += " language=" + std::string(language_name(*e.language));
  what += " result=" + e.result;
  if (e.error) what += " error=" + std::string(error_code_name(*e.error));
  if (!e.vm.empty()) what += " vm=" + e.vm;
  f.emplace_back("MESSAGE_ID", std::string(audit_message_id(e.kind)));
  f.emplace_back("MESSAGE", "audit: " + what);
  f.emplace_back("PRIORITY", e.kind == AuditKind::denial ? "5" : "6");
  f.emplace_back("SANDBOXD_AUDIT", kind);
  f.emplace_back("SANDBOXD_UID", std::to_string(e.uid));
  f.emplace_back("SANDBOXD_REQUEST", log_escape(e.request, 64));
  if (e.language) f.emplace_back("SANDBOXD_LANGUAGE", std::string(language_name(*e.language)));
  f.emplace_back("SANDBOXD_RESULT", e.result);
  if (e.error) f.emplace_back("SANDBOXD_ERROR", std::string(error_code_name(*e.error)));
  if (e.exit_code) f.emplace_back("SANDBOXD_EXIT_CODE", std::to_string(*e.exit_code));
  if (e.signal) f.emplace_back("SANDBOXD_SIGNAL", std::to_string(*e.signal));
  for (const auto& [k, v] : e.numbers) f.emplace_back("SANDBOXD_" + std::string(k), std::to_string(v));
  if (!e.vm.empty()) f.emplace_back("SANDBOXD_VM", e.vm);
  if (!e.vm_start.empty()) f.emplace_back("SANDBOXD_VM_START", e.vm_start);
  if (!e.session.empty()) f.emplace_back("SANDBOXD_SESSION", log_escape(e.session, 64));
  if (!e.path.empty()) f.emplace_back("SANDBOXD_PATH", log_escape(e.path, 512));
  if (!e.reason.empty()) f.emplace_back("SANDBOXD_REASON", log_escape(e.reason, 512));
  return f;
}

std::string audit_json(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out = "{";
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) out += ',';
    json_string(out, fields[i].first);
    out += ':';
    json_string(out, fields[i].second);
  }
  out += '}';
  return out;
}

void set_audit_target(AuditTarget target) { g_target = target; }

void audit(const AuditEntry& entry) {
  uint64_t suppressed = 0;
  if (entry.kind == AuditKind::denial) {
    auto now = std::chrono::steady_clock::now();
    if (now - g_window >= std::chrono::seconds(1)) {
      g_window = now;
      g_in_window = 0;
    }
    if (++g_in_window > kDenialBurst) {
      ++g_suppressed;
      return;
    }
    suppressed = std::exchange(g_suppressed, 0);
  }
  auto fields = audit_fields(entry);
  if (suppressed) fields.emplace_back("SANDBOXD_SUPPRESSED", std::to_string(suppressed));
  if (use_journal()) {
    std::vector<std::string> lines;
    lines.reserve(fields.size());
    for (const auto& [k, v] : fields) lines.push_back(k + "=" + v);
    std::vector<iovec> iov;
    iov.reserve(lines.size());
    for (auto& l : lines) iov.push_back({l.data(), l.size()});
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0) return;
    // journald went away: the entry still goes somewhere.
  }
  // "<N>": the syslog priority, as journald reads a stream line.
  std::string line = "<" + fields[2].second + ">audit: " + audit_json(fields) + "\n";
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace sandbox::daemon
