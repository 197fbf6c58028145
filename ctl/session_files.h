// Copying files between the host and a session, for `session put/get` and
// `run --upload/--download`.
#pragma once

#include <string>

#include <sandbox/client.h>

namespace sandbox::ctl {

// LOCAL may be - (stdin).
Result<void> put_file(const Session& session, const std::string& local, const std::string& guest, bool executable);
// LOCAL may be - (stdout); empty means GUEST's last name in the current directory.
Result<void> get_file(const Session& session, const std::string& guest, std::string local);

}  // namespace sandbox::ctl
