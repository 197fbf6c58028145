#include "common/validate.h"

#include "common/net_rules.h"
#include "common/packages.h"

#include <cctype>

#include <sandbox/limits.h>

namespace sandbox {
namespace {

Error invalid(std::string msg) { return Error::make(ErrorCode::invalid_argument, std::move(msg)); }

// Environment names refused, by class. A prefix entry ends in '*'; `except`
// lists the harmless members of a prefix class. Matching ignores case, so
// a spelling the tool does not read is refused too rather than guessed at.
struct RefusedEnv {
  std::string_view pattern;
  std::string_view why;
};
constexpr RefusedEnv kRefusedEnv[] = {
    {"LD_*", "the dynamic loader reads it before any code runs"},
    {"GLIBC_TUNABLES", "changes the C library before any code runs"},
    {"MALLOC_*", "changes the C library before any code runs"},
    {"GCONV_PATH", "makes the C library load code"},
    {"LOCPATH", "makes the C library load locale data from elsewhere"},
    {"NLSPATH", "makes the C library load message catalogs from elsewhere"},
    {"PYTHON*", "Python's start-up and module paths"},
    {"NODE_*", "Node's start-up options and module paths"},
    {"PERL*", "Perl's start-up options and module paths"},
    {"RUBY*", "Ruby's start-up options and module paths"},
    {"BASH*", "the shell's start-up hooks and options"},
    {"ENV", "the shell's start-up file"},
    {"SHELLOPTS", "the shell's options"},
    {"PROMPT_COMMAND", "a shell hook run before each prompt"},
    {"PS1", "a shell prompt, expanded like code"},
    {"PS2", "a shell prompt, expanded like code"},
    {"PS3", "a shell prompt, expanded like code"},
    {"PS4", "a shell prompt, expanded like code when tracing"},
    {"IFS", "changes how the shell splits every word"},
    {"CDPATH", "changes where the shell's cd goes"},
    {"GLOBIGNORE", "changes the shell's globbing"},
    {"PATH", "set by the sandbox: which programs run"},
    {"HOME", "set by the sandbox: where the code's files are"},
};
// Members of refused prefix classes that change nothing about start-up.
constexpr std::string_view kHarmlessEnv[] = {
    "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONUTF8", "NODE_ENV",
};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

const RefusedEnv* refused(std::string_view name) {
  for (auto ok_name : kHarmlessEnv)
    if (iequals(name, ok_name)) return nullptr;
  for (const auto& r : kRefusedEnv) {
    if (r.pattern.ends_with('*')) {
      auto prefix = r.pattern.substr(0, r.pattern.size() - 1);
      if (name.size() >= prefix.size() && iequals(name.substr(0, prefix.size()), prefix)) return &r;
    } else if (iequals(name, r.pattern)) {
      return &r;
    }
  }
  return nullptr;
}

std::string ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

}  // namespace

Result<void> validate_env_name(std::string_view name) {
  if (name.empty()) return invalid("environment variable name is empty");
  if (name.size() > limits::kMaxEnvNameBytes)
    return invalid("environment variable name longer than " + std::to_string(limits::kMaxEnvNameBytes) + " bytes");
  for (size_t i = 0; i < name.size(); ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    bool okc = c < 128 && (c == '_' || std::isalpha(c) || (i > 0 && std::isdigit(c)));
    if (!okc) return invalid("environment variable name '" + std::string(name) + "' is not [A-Za-z_][A-Za-z0-9_]*");
  }
  if (const auto* r = refused(name))
    return invalid("environment variable '" + std::string(name) + "' is not allowed (" + std::string(r->why) + ")");
  return ok();
}

Result<void> validate_env_value(std::string_view name, std::string_view value) {
  if (value.size() > limits::kMaxEnvValueBytes)
    return invalid("value of '" + std::string(name) + "' longer than " + std::to_string(limits::kMaxEnvValueBytes) +
                   " bytes");
  for (char ch : value) {
    auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return invalid("value of '" + std::string(name) + "' contains a control character");
  }
  return ok();
}

Result<void> validate_env(const EnvList& env) {
  if (env.size() > limits::kMaxEnvVars)
    return invalid("more than " + std::to_string(limits::kMaxEnvVars) + " environment variables");
  for (size_t i = 0; i < env.size(); ++i) {
    if (auto v = validate_env_name(env[i].first); !v) return v;
    if (auto v = validate_env_value(env[i].first, env[i].second); !v) return v;
    for (size_t j = 0; j < i; ++j)
      if (env[j].first == env[i].first) return invalid("environment variable '" + env[i].first + "' given twice");
  }
  return ok();
}

Result<void> validate_code(std::string_view code) {
  if (code.size() > limits::kMaxCodeBytes)
    return invalid("code is " + std::to_string(code.size()) + " bytes; the limit is " +
                   std::to_string(limits::kMaxCodeBytes));
  if (code.find('\0') != std::string_view::npos) return invalid("code contains a NUL byte");
  if (code.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos)
    return invalid(code.empty() ? "code is empty" : "code is only white space");
  return ok();
}

Result<void> validate_timeout(std::chrono::milliseconds t) {
  if (t.count() < limits::kMinTimeoutMs || t.count() > limits::kMaxTimeoutMs)
    return invalid("timeout " + ms(t) + " is outside " + std::to_string(limits::kMinTimeoutMs) + "-" +
                   std::to_string(limits::kMaxTimeoutMs) + " ms");
  return ok();
}

Result<void> validate_memory(uint32_t mb) {
  if (mb < limits::kMinMemoryMb || mb > limits::kMaxMemoryMb)
    return invalid("memory " + std::to_string(mb) + " MB is outside " + std::to_string(limits::kMinMemoryMb) + "-" +
                   std::to_string(limits::kMaxMemoryMb) + " MB");
  return ok();
}

Result<void> validate(const RunRequest& r) {
  if (auto v = validate_code(r.code); !v) return v;
  if (auto v = validate_timeout(r.timeout); !v) return v;
  if (auto v = validate_memory(r.memory_mb); !v) return v;
  if (auto v = validate_network(r.net); !v) return v;
  if (auto v = validate_package_syntax(r.language, r.packages); !v) return v;
  return validate_env(r.env);
}

Result<void> validate(const SessionOptions& o) {
  if (auto v = validate_timeout(o.timeout); !v) return v;
  if (auto v = validate_memory(o.memory_mb); !v) return v;
  if (o.idle_timeout.count() < limits::kMinSessionIdleMs || o.idle_timeout.count() > limits::kMaxSessionIdleMs)
    return invalid("idle timeout " + ms(o.idle_timeout) + " is outside " + std::to_string(limits::kMinSessionIdleMs) +
                   "-" + std::to_string(limits::kMaxSessionIdleMs) + " ms");
  if (auto v = validate_network(o.net); !v) return v;
  if (auto v = validate_package_syntax(o.language, o.packages); !v) return v;
  return validate_env(o.env);
}

Result<void> validate_package_syntax(Language language, const std::vector<std::string>& packages) {
  PackagePolicy any;
  any.require_pinned = false;
  if (auto v = parse_packages(language, packages, any); !v) return std::move(v).error();
  return ok();
}

Result<void> validate_exec(std::string_view code, std::chrono::milliseconds timeout) {
  if (auto v = validate_code(code); !v) return v;
  if (timeout.count() != 0) return validate_timeout(timeout);
  return ok();
}

}  // namespace sandbox
