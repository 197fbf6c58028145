// The package builder (SPEC F14): one VM per layer build, booted from the
// builder root (the guest root plus pip, npm and mkfs.erofs) with a scratch
// disk. Its egress reaches the operator's package index and nothing else;
// it runs builder.sh as the unprivileged user, under the same confinement
// as user code, and no user code at all. The image it writes on the scratch
// disk becomes the layer: the host copies out the length the builder
// reports, never reading it, and leaves hashing and publishing to the
// layer store.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/fleet.h"
#include "daemon/layers.h"
#include "daemon/offload.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

struct BuilderOptions {
  // The images include a builder root; without one every build fails.
  bool available = false;
  uint32_t memory_mb = 1024;
  // The install's own limit; booting has the VM's boot deadline.
  std::chrono::milliseconds timeout{300'000};
  // The scratch disk (sparse): the largest layer a build can make.
  uint64_t scratch_bytes = uint64_t{2} << 30;
  // Allowlist entries (net_rules.h) a builder of each language may reach:
  // its index's host, and hosts the index sends downloads to.
  std::vector<std::string> python_hosts, npm_hosts;
  // Debian packages: the archives ("URL SUITE COMPONENT..." lines), their
  // hosts, and the keyring they are signed with (empty: the guest's own).
  std::string apt_sources;
  std::vector<std::string> apt_hosts;
  std::string apt_keyring;
};

// The allowlist entry for an index URL's host ("pypi.org",
// "registry.example:8443"); invalid_argument for anything but an
// http(s) URL with a host name.
Result<std::string> index_host_entry(std::string_view url);

class Builder {
 public:
  using Done = std::function<void(Result<std::string> lock)>;
  // `make_room` frees a VM slot if it can (a warm VM goes); a build waits
  // for one otherwise, within its time limit.
  Builder(uv_loop_t* loop, Fleet& fleet, std::function<bool()> make_room, BuilderOptions options);
  ~Builder();
  Builder(const Builder&) = delete;
  Builder& operator=(const Builder&) = delete;

  // A LayerBuildFn: writes the image at `image_path`, then `done` with the
  // resolved lock ("NAME==VERSION HASH" lines), from a later loop turn.
  void build(const LayerKeyInputs& inputs, const std::string& image_path, Done done);
  size_t running() const { return jobs_.size(); }

 private:
  class Job;
  void finish(uint64_t id);

  uv_loop_t* loop_;
  Fleet& fleet_;
  std::function<bool()> make_room_;
  BuilderOptions options_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Job>> jobs_;
  Deferred later_;
  // Copies a finished build's image out of its scratch disk (up to
  // scratch_bytes) off the loop. Last: its answers reach the jobs.
  Offload copier_;
};

}  // namespace sandbox::daemon
