// The interpreter side of an execution, one script per language (the files
// in agent/launchers/, embedded at build time). The protocol they share
// with exec.cc: "r" on fd 4 once the interpreter is up; then one byte on
// fd 3, "g" to run the code file once or "s" for a session, whose cells are
// lines on fd 3 answered by status lines on fd 4.
#pragma once

namespace sandbox::agent::launchers {

extern const char* const kPython;
extern const char* const kNode;
extern const char* const kBash;

}  // namespace sandbox::agent::launchers
