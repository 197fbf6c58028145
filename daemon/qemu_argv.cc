#include "daemon/qemu_argv.h"

#include "common/protocol.h"

namespace sandbox::daemon {
namespace {

Result<void> check_path(std::string_view what, const std::string& path) {
  if (path.empty() || path.front() != '/')
    return Error::make(ErrorCode::invalid_argument, std::string(what) + " path must be absolute: '" + path + "'");
  for (char c : path)
    if (c == '\0' || c == '\n' || c == '\r')
      return Error::make(ErrorCode::invalid_argument, std::string(what) + " path contains a control character");
  return ok();
}

}  // namespace

std::string qemu_escape(std::string_view value) {
  std::string out;
  for (char c : value) {
    out.push_back(c);
    if (c == ',') out.push_back(',');
  }
  return out;
}

Result<std::vector<std::string>> qemu_argv(const VmSpec& s) {
  if (auto r = check_path("kernel", s.kernel); !r) return std::move(r).error();
  if (auto r = check_path("initrd", s.initrd); !r) return std::move(r).error();
  if (auto r = check_path("rootfs", s.rootfs); !r) return std::move(r).error();
  // -kernel and -initrd take a plain file name with no option parsing, but a
  // ',' in -initrd is reserved for multiboot module lists.
  if (s.initrd.find(',') != std::string::npos)
    return Error::make(ErrorCode::invalid_argument, "initrd path may not contain ','");
  if (s.qemu.empty()) return Error::make(ErrorCode::invalid_argument, "no QEMU binary configured");
  if (s.accel != Accel::kvm && s.accel != Accel::tcg)
    return Error::make(ErrorCode::internal, "accelerator must be resolved before building argv");
  if (s.memory_mb == 0 || s.vcpus == 0 || s.agent_fd < 0)
    return Error::make(ErrorCode::invalid_argument, "memory, vCPUs and agent fd must be set");

  std::vector<std::string> a = {
      s.qemu,
      "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
  };
  if (s.accel == Accel::kvm) {
    a.insert(a.end(), {"-accel", "kvm", "-cpu", "host"});
  } else {
    a.insert(a.end(), {"-accel", "tcg,tb-size=" + std::to_string(s.tcg_tb_size_mb), "-cpu", "max"});
  }
  a.insert(a.end(), {
      "-m", std::to_string(s.memory_mb),
      "-smp", std::to_string(s.vcpus),
      "-kernel", s.kernel,
      "-initrd", s.initrd,
      "-append", kKernelCmdline,
      "-drive", "file=" + qemu_escape(s.rootfs) + ",format=raw,if=none,readonly=on,id=root",
      "-device", "virtio-blk-device,drive=root",
      "-device", "virtio-rng-device",
      "-device", "virtio-serial-device",
      "-chardev", "socket,id=agent,fd=" + std::to_string(s.agent_fd),
      "-device", "virtserialport,chardev=agent,name=" + std::string(proto::kAgentPortName),
      // The console goes to QEMU's stdout, which the daemon keeps for errors.
      "-serial", "stdio",
  });
  return a;
}

}  // namespace sandbox::daemon
