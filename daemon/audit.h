// The audit trail: one structured entry per run, session call, file
// transfer and refused request, naming who (uid), what (request kind,
// language), how it ended (result or error code), how long it took, how
// many bytes moved and which VM served it. Never the code, its output or
// a file's contents.
//
// Entries go to journald as native fields when its socket exists
// (`journalctl MESSAGE_ID=<id>`, `SANDBOXD_UID=1000`...), else to stderr as
// one line "<6>audit: {JSON object of the same fields}".
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox::daemon {

enum class AuditKind : uint8_t { run, session_open, session_exec, session_close, file_write, file_read, file_list, denial };

std::string_view audit_kind_name(AuditKind kind);
// The fixed journald MESSAGE_ID of a kind (128 bits in hex).
std::string_view audit_message_id(AuditKind kind);

struct AuditEntry {
  AuditKind kind = AuditKind::run;
  uid_t uid = 0;
  std::string request;  // the request's wire type: "run", "session_exec", "file_read"...
  std::optional<Language> language;
  // "ok", "exit_nonzero", "timeout", "signal", "error", "cancelled", "refused"
  std::string result;
  std::optional<ErrorCode> error;
  std::optional<int32_t> exit_code;
  std::optional<int32_t> signal;
  // Durations (ms) and byte counts, named as their field: "TOTAL_MS", "BYTES"...
  std::vector<std::pair<std::string_view, uint64_t>> numbers;
  std::string vm;        // the QEMU's name, "vm-N"
  std::string vm_start;  // pool, snapshot, boot
  std::string session;
  std::string path;  // a file call's guest path (escaped)
  std::string reason;  // why a session closed (the daemon's words)
};

// The entry as journald fields (MESSAGE_ID, MESSAGE, PRIORITY, SANDBOXD_*),
// in a fixed order; values are escaped of control characters.
std::vector<std::pair<std::string, std::string>> audit_fields(const AuditEntry& entry);
// The stderr form: those fields as one JSON object.
std::string audit_json(const std::vector<std::pair<std::string, std::string>>& fields);

enum class AuditTarget { automatic, journal, stderr_only };
// automatic: journald when /run/systemd/journal/socket exists.
void set_audit_target(AuditTarget target);
// Writes one entry. Refusals are rate-limited (a client can provoke them at
// will); how many were left out is named in the next one that is written.
void audit(const AuditEntry& entry);

}  // namespace sandbox::daemon
