// sandboxctl verbs: one function each, dispatched from main's table, and
// what they share. Only the public libsandbox API is used here.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include <sandbox/client.h>

namespace sandbox::ctl {

// Exit statuses of sandboxctl itself (the code's own status otherwise).
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 124;       // like timeout(1)
inline constexpr int kExitSandboxError = 125;  // the sandbox, not the code, failed

// Options every verb takes, before the verb or after it.
struct Globals {
  std::string socket;  // empty: $SANDBOXD_SOCKET, else the default
  bool json = false;
  bool quiet = false;
};
// Consumes argv[*i] (and its value) when it is a global option; false if not.
bool parse_global(int argc, char** argv, int* i, Globals* g);
std::string socket_path(const Globals& g);

int cmd_run(Globals g, int argc, char** argv);
int cmd_status(Globals g, int argc, char** argv);
int cmd_pool(Globals g, int argc, char** argv);
int cmd_snapshots(Globals g, int argc, char** argv);
int cmd_layers(Globals g, int argc, char** argv);
int cmd_images(Globals g, int argc, char** argv);
int cmd_metrics(Globals g, int argc, char** argv);
int cmd_drain(Globals g, int argc, char** argv);
int cmd_top(Globals g, int argc, char** argv);
// Totals by outcome and run latency per path, from the metrics text (status).
void print_metrics_summary(const std::string& metrics_text);
int cmd_session(Globals g, int argc, char** argv);

// The exit status sandboxctl gives a run's outcome.
int exit_status(const Result<RunResult>& r);
// Prints "sandboxctl: CODE: message" and returns the exit status for it.
int fail(const Error& e, std::string_view prefix = {});
// Writes all of `data` to fd; remembers whether fd 2's last byte ended a line.
void write_fd(int fd, std::string_view data);
// A notice on stderr, on a line of its own even after output without a newline.
void notice(std::string_view text);
// One JSON object for a run or exec: the source, then the result's fields,
// or "language" and "error"; `extra` (a failed download, say) adds "error"
// to a result.
std::string run_json(std::string_view source, std::optional<Language> language, const Result<RunResult>& r,
                     const std::optional<Error>& extra = std::nullopt);
// "2.5" -> 2500 ms; false unless a positive number of seconds.
bool parse_seconds(const std::string& arg, std::chrono::milliseconds* out);
// "GUEST[:HOST]" or "GUEST:unix" for --expose; false if it is neither.
bool parse_expose(const std::string& arg, PortMapping* out);
// "guest port 8080 -> http://127.0.0.1:40123" lines for stderr.
std::string describe_exposed(const std::vector<ExposedPort>& ports);

}  // namespace sandbox::ctl
