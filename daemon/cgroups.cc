#include "daemon/cgroups.h"

#include "common/io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace sandbox::daemon {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// cgroupfs files exist already; O_CREAT only matters for a fake tree.
Result<void> write_text(const std::string& path, const std::string& value) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return Error::sys("open", path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    return Error::sys("write '" + value + "' to", path);
  return ok();
}

Result<void> make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return Error::sys("mkdir", path);
  return ok();
}

std::vector<std::string> words(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

void sleep_ms(long ms) {
  timespec ts{0, ms * 1'000'000};
  ::nanosleep(&ts, nullptr);
}

}  // namespace

std::optional<std::string> cgroup2_path_of(const std::string& proc_cgroup) {
  std::istringstream in(proc_cgroup);
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("0::")) return line.substr(3);
  return std::nullopt;
}

std::optional<std::string> cgroup2_mount(const std::string& mountinfo) {
  std::istringstream in(mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    auto fs = words(line.substr(dash + 3));
    auto fields = words(line.substr(0, dash));
    if (!fs.empty() && fs[0] == "cgroup2" && fields.size() >= 5) return fields[4];
  }
  return std::nullopt;
}

Cgroups Cgroups::open(const Options& options) {
  Cgroups cg;
  auto all = std::vector<std::string>(std::begin(kControllers), std::end(kControllers));
  auto disabled = [&](std::string why) {
    cg.enabled_ = false;
    cg.available_.clear();
    cg.missing_ = all;
    cg.status_ = "no host-side VM limits: " + why;
    return cg;
  };
  std::string root = options.root;
  if (root.empty()) {
    auto found = cgroup2_mount(read_text("/proc/self/mountinfo"));
    if (!found) return disabled("no cgroup v2 hierarchy is mounted");
    root = *found;
  }
  std::string base = options.base;
  if (base.empty()) {
    auto own = cgroup2_path_of(read_text("/proc/self/cgroup"));
    if (!own) return disabled("this process is in no cgroup v2 group");
    base = *own;
  }
  // The root cgroup may hold processes and is not ours to rearrange: VMs
  // go to a subtree of their own.
  bool own_subtree = base == "/";
  if (own_subtree) base = "/sandboxd";
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  cg.base_dir_ = root + base;

  // What the subtree can offer: its own controllers, or, for a subtree not
  // made yet, its parent's.
  std::string parent = cg.base_dir_.substr(0, cg.base_dir_.rfind('/'));
  struct stat st{};
  bool exists = ::stat(cg.base_dir_.c_str(), &st) == 0;
  auto offered = words(read_text((exists ? cg.base_dir_ : parent) + "/cgroup.controllers"));
  for (const auto& c : all) {
    if (std::find(offered.begin(), offered.end(), c) != offered.end())
      cg.available_.push_back(c);
    else
      cg.missing_.push_back(c);
  }
  std::string offered_text = offered.empty() ? "none" : joined(offered);
  if (cg.available_.empty())
    return disabled("the cgroup v2 tree at " + (exists ? cg.base_dir_ : parent) +
                    " offers none of memory, pids, cpu (it has: " + offered_text + ")");

  std::string enable;
  for (const auto& c : cg.available_) enable += (enable.empty() ? "+" : " +") + c;
  auto setup = [&]() -> Result<void> {
    if (own_subtree) {
      if (auto r = write_text(parent + "/cgroup.subtree_control", enable); !r) return r;
      if (auto r = make_dir(cg.base_dir_); !r) return r;
    } else if (options.move_self) {
      if (auto r = make_dir(cg.base_dir_ + "/daemon"); !r) return r;
      if (auto r = write_text(cg.base_dir_ + "/daemon/cgroup.procs", std::to_string(::getpid())); !r) return r;
    }
    if (auto r = write_text(cg.base_dir_ + "/cgroup.subtree_control", enable); !r) return r;
    if (auto r = make_dir(cg.base_dir_ + "/vms"); !r) return r;
    return write_text(cg.base_dir_ + "/vms/cgroup.subtree_control", enable);
  };
  if (auto r = setup(); !r) return disabled("cannot set up " + cg.base_dir_ + ": " + r.error().message);
  cg.enabled_ = true;
  cg.status_ = "per-VM cgroups in " + cg.base_dir_ + "/vms (" + joined(cg.available_) + ")";
  if (!cg.missing_.empty()) cg.status_ += "; missing controllers: " + joined(cg.missing_);
  return cg;
}

Result<unique_fd> Cgroups::create(const std::string& name, const CgroupLimits& limits) const {
  if (!enabled_) return Error::make(ErrorCode::internal, "cgroups are not enabled");
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
    return Error::make(ErrorCode::internal, "bad cgroup name '" + name + "'");
  auto dir = vm_dir(name);
  // A leftover of the same name belongs to nobody now.
  if (::mkdir(dir.c_str(), 0755) != 0) {
    if (errno != EEXIST) return Error::sys("mkdir", dir);
    remove(name);
    if (::mkdir(dir.c_str(), 0755) != 0) return Error::sys("mkdir", dir);
  }
  auto has = [&](const char* c) { return std::find(available_.begin(), available_.end(), c) != available_.end(); };
  auto set = [&]() -> Result<void> {
    if (has("memory")) {
      if (auto r = write_text(dir + "/memory.high", std::to_string(limits.memory_high)); !r) return r;
      if (auto r = write_text(dir + "/memory.max", std::to_string(limits.memory_max)); !r) return r;
    }
    if (has("pids"))
      if (auto r = write_text(dir + "/pids.max", std::to_string(limits.pids_max)); !r) return r;
    if (has("cpu")) {
      std::string v = limits.cpu_percent ? std::to_string(uint64_t{limits.cpu_percent} * 1000) + " 100000" : "max";
      if (auto r = write_text(dir + "/cpu.max", v); !r) return r;
    }
    return ok();
  };
  if (auto r = set(); !r) {
    remove(name);
    return std::move(r).error();
  }
  unique_fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    auto err = Error::sys("open", dir);
    remove(name);
    return err;
  }
  return fd;
}

CgroupUsage Cgroups::usage(const std::string& name) const {
  CgroupUsage u;
  if (!enabled_) return u;
  auto dir = vm_dir(name);
  auto peak = words(read_text(dir + "/memory.peak"));
  if (!peak.empty()) u.memory_peak_bytes = std::strtoull(peak[0].c_str(), nullptr, 10);
  auto stat = words(read_text(dir + "/cpu.stat"));
  for (size_t i = 0; i + 1 < stat.size(); ++i)
    if (stat[i] == "usage_usec") u.cpu_usec = std::strtoull(stat[i + 1].c_str(), nullptr, 10);
  return u;
}

bool Cgroups::try_remove(const std::string& name) const {
  auto dir = vm_dir(name);
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return true;
  if (errno == ENOTEMPTY) {
    // Only a plain directory (a fake tree) has files of its own to remove;
    // cgroupfs refuses the unlinks and removes them with the directory.
    if (auto d = Dir::open(dir))
      while (const dirent* e = d->next())
        if (e->d_type == DT_REG) ::unlinkat(d->fd(), e->d_name, 0);
    if (::rmdir(dir.c_str()) == 0) return true;
  }
  if (errno != EBUSY) return true;  // nothing a retry would change
  // cgroup.kill (Linux 5.14) ends anything still inside at once; killed
  // processes leave asynchronously.
  unique_fd kill(::open((dir + "/cgroup.kill").c_str(), O_WRONLY | O_CLOEXEC));
  if (kill) (void)!::write(kill.get(), "1", 1);
  return false;
}

void Cgroups::remove(const std::string& name) const {
  for (int attempt = 0; attempt < 200; ++attempt) {
    if (try_remove(name)) return;
    sleep_ms(5);
  }
}

std::vector<std::string> Cgroups::recover() const {
  std::vector<std::string> names;
  if (!enabled_) return names;
  if (auto d = Dir::open(base_dir_ + "/vms"))
    while (const dirent* e = d->next())
      if (e->d_type == DT_DIR) names.emplace_back(e->d_name);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) remove(n);
  return names;
}

}  // namespace sandbox::daemon
