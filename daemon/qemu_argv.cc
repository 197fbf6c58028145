#include "daemon/qemu_argv.h"

#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <fstream>

#include "common/net_frame.h"
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

std::string kernel_cmdline(const VmSpec& spec) {
  std::string cmdline = kKernelCmdline;
  if (spec.accel == Accel::tcg && spec.tsc_khz > 0) {
    cmdline += " tsc_early_khz=" + std::to_string(spec.tsc_khz);
    // The guest's TSC is the host's invariant one. Its runtime check
    // against jiffies, which lag whenever emulation falls behind, would
    // otherwise declare it unstable and leave the guest on a 10 ms jiffies
    // clock for the rest of its life (and every clone's).
    cmdline += " tsc=reliable";
  }
  // With one vCPU the kernel would rewrite every LOCK prefix in its text
  // at boot (with more it leaves them); under TCG each such write to code
  // costs translation bookkeeping (about 0.1 s of a boot), and an
  // emulated LOCK costs next to nothing.
  if (spec.accel == Accel::tcg) cmdline += " noreplace-smp";
  // QEMU's emulated local APIC counts at a fixed rate; sandboxd's kernel
  // (the one without ACPI) takes it from here instead of calibrating its
  // timer against the PIT, 0.2-0.4 s of a boot under TCG. Debian's kernel
  // has no such parameter. Under KVM the TSC deadline timer needs none.
  if (spec.accel == Accel::tcg && !spec.acpi) cmdline += " lapic_timer_hz=" + std::to_string(kQemuApicTimerHz);
  // Without ACPI the kernel's reboot walks ACPI and the keyboard
  // controller before a triple fault; the fault alone ends the VM at once.
  if (!spec.acpi) cmdline += " reboot=t";
  if (spec.prestart) cmdline += " sandbox.prestart=" + std::string(language_name(*spec.prestart));
  if (spec.prestart && spec.template_vm) cmdline += " sandbox.template";
  if (spec.prestart && spec.warm_up && !spec.template_vm && !spec.incoming) {
    cmdline += " sandbox.warm_up";
    if (spec.run_pids_max) cmdline += " sandbox.pids_max=" + std::to_string(spec.run_pids_max);
  }
  if (spec.layer_fd >= 0 && spec.layer) cmdline += " sandbox.layer=" + std::string(language_name(*spec.layer));
  if (spec.scratch_fd >= 0 && spec.scratch_ro_fd >= 0) cmdline += " sandbox.builder";
  return cmdline;
}

uint32_t measure_tsc_khz() {
#if defined(__x86_64__)
  // Only an invariant TSC ticks at a fixed rate worth passing on.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  bool invariant = false;
  while (std::getline(cpuinfo, line) && !line.empty())
    if (line.starts_with("flags")) invariant = line.find(" constant_tsc") != std::string::npos &&
                                               line.find(" nonstop_tsc") != std::string::npos;
  if (!invariant) return 0;
  std::vector<uint64_t> samples;
  for (int i = 0; i < 5; ++i) {
    timespec t0{}, t1{};
    ::clock_gettime(CLOCK_MONOTONIC_RAW, &t0);
    uint64_t c0 = __rdtsc();
    timespec pause{0, 10'000'000};
    ::nanosleep(&pause, nullptr);
    ::clock_gettime(CLOCK_MONOTONIC_RAW, &t1);
    uint64_t c1 = __rdtsc();
    auto ns = (t1.tv_sec - t0.tv_sec) * 1'000'000'000LL + (t1.tv_nsec - t0.tv_nsec);
    if (ns > 0) samples.push_back((c1 - c0) * 1'000'000 / static_cast<uint64_t>(ns));
  }
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  // Whole MHz: stable across daemon starts (it is part of snapshot keys) and
  // close enough for the guest, which refines it anyway.
  return static_cast<uint32_t>((samples[samples.size() / 2] + 500) / 1000 * 1000);
#else
  return 0;
#endif
}

std::string qemu_escape(std::string_view value) {
  std::string out;
  for (char c : value) {
    out.push_back(c);
    if (c == ',') out.push_back(',');
  }
  return out;
}

std::string virtio_serial_device() {
  // The guest sets up two virtqueues for each possible port, 64 at QEMU's
  // default of 31, each one a string of emulated register writes at boot.
  return "virtio-serial-device,max_ports=" + std::to_string(kVirtioSerialPorts);
}

std::string qemu_machine(const VmSpec& s) {
  std::string machine = "microvm,x-option-roms=off,isa-serial=on,rtc=on";
  if (!s.acpi) machine += ",acpi=off";
  return machine;
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

  if (!s.memory_file.empty())
    if (auto r = check_path("memory file", s.memory_file); !r) return std::move(r).error();
  std::string machine = qemu_machine(s);
  if (!s.memory_file.empty()) machine += ",memory-backend=mem";
  std::vector<std::string> a = {
      s.qemu,
      "-M", machine,
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      // QEMU's own seccomp filter: no obsolete syscalls, no privilege
      // changes, no spawning, no resource-limit changes.
      "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
  };
  if (s.accel == Accel::kvm) {
    a.insert(a.end(), {"-accel", "kvm", "-cpu", "host"});
  } else {
    a.insert(a.end(), {"-accel", "tcg,tb-size=" + std::to_string(s.tcg_tb_size_mb), "-cpu", "max"});
  }
  a.insert(a.end(), {
      "-m", std::to_string(s.memory_mb),
      "-smp", std::to_string(s.vcpus),
  });
  if (!s.memory_file.empty())
    a.insert(a.end(), {"-object", "memory-backend-file,id=mem,size=" + std::to_string(s.memory_mb) +
                                      "M,mem-path=" + qemu_escape(s.memory_file) +
                                      (s.memory_shared ? ",share=on" : ",share=off")});
  // A restored VM's RAM already holds the booted kernel: loading the
  // kernel and initramfs again would only keep both files mapped in QEMU
  // (15 MB of its RSS) for a boot that never happens.
  if (!s.incoming)
    a.insert(a.end(), {
        "-kernel", s.kernel,
        "-initrd", s.initrd,
        "-append", kernel_cmdline(s),
    });
  // An inherited descriptor is named through an fd set: QEMU uses it as it
  // is, without reopening the image by path.
  if (s.rootfs_fd >= 0)
    a.insert(a.end(), {"-add-fd", "fd=" + std::to_string(s.rootfs_fd) + ",set=1,opaque=rootfs"});
  std::string rootfs = s.rootfs_fd >= 0 ? "/dev/fdset/1" : qemu_escape(s.rootfs);
  a.insert(a.end(), {
      "-drive", "file=" + rootfs + ",format=raw,if=none,readonly=on,id=root",
      "-device", "virtio-blk-device,drive=root",
      "-device", "virtio-rng-device",
      "-device", virtio_serial_device(),
      "-chardev", "socket,id=agent,fd=" + std::to_string(s.agent_fd),
      "-device", "virtserialport,chardev=agent,name=" + std::string(proto::kAgentPortName),
  });
  // The package layer: read-only like the root, after it so the root keeps
  // its name; the guest finds it by its serial, not by its order.
  if (s.layer_fd >= 0)
    a.insert(a.end(), {"-add-fd", "fd=" + std::to_string(s.layer_fd) + ",set=2,opaque=layer",
                       "-drive", "file=/dev/fdset/2,format=raw,if=none,readonly=on,id=layer",
                       "-device", "virtio-blk-device,drive=layer,serial=" + std::string(proto::kLayerDiskSerial)});
  // A builder's scratch disk, found by its serial too.
  if (s.scratch_fd >= 0 && s.scratch_ro_fd >= 0)
    a.insert(a.end(), {"-add-fd", "fd=" + std::to_string(s.scratch_fd) + ",set=3,opaque=scratch",
                       "-add-fd", "fd=" + std::to_string(s.scratch_ro_fd) + ",set=3,opaque=scratch-ro",
                       "-drive", "file=/dev/fdset/3,format=raw,if=none,id=scratch",
                       "-device", "virtio-blk-device,drive=scratch,serial=" + std::string(proto::kScratchDiskSerial)});
  // A second port, not a NIC: the guest's only way out is through the daemon.
  if (s.net_fd >= 0)
    a.insert(a.end(), {"-chardev", "socket,id=net,fd=" + std::to_string(s.net_fd),
                       "-device", "virtserialport,chardev=net,name=" + std::string(net::kNetPortName)});
  a.insert(a.end(), {
      // The console goes to QEMU's stdout, which the daemon keeps for errors.
      "-serial", "stdio",
  });
  if (s.qmp_fd >= 0)
    a.insert(a.end(), {"-chardev", "socket,id=qmp,fd=" + std::to_string(s.qmp_fd), "-mon", "chardev=qmp,mode=control"});
  if (s.incoming) a.insert(a.end(), {"-incoming", "defer"});
  return a;
}

}  // namespace sandbox::daemon
