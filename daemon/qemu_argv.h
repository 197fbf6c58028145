// The QEMU command line for one microVM, built by a pure function so it can
// be checked by golden tests (including attempts to inject options).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol.h"
#include <sandbox/result.h>
#include "daemon/config.h"

namespace sandbox::daemon {

struct VmSpec {
  std::string qemu;
  Accel accel = Accel::tcg;  // resolved: kvm or tcg
  uint32_t memory_mb = 256;
  uint32_t vcpus = 1;
  uint32_t tcg_tb_size_mb = 32;
  std::string kernel;
  std::string initrd;
  std::string rootfs;
  // Descriptor number, in QEMU's process, of the root image opened
  // read-only by the daemon; -1: QEMU opens `rootfs` itself.
  int rootfs_fd = -1;
  // Descriptor number, in QEMU's process, of the connected agent socket.
  int agent_fd = 3;
  // The network channel's socket (common/net_frame.h); -1 for none.
  int net_fd = -1;
  // Under TCG the guest reads the host's TSC; its early calibration against
  // the emulated PIT fails now and then and the boot hangs. Passing the
  // measured frequency skips that calibration. 0: let the guest calibrate.
  uint32_t tsc_khz = 0;
  // Language whose interpreter the agent starts before its hello, if any.
  std::optional<Language> prestart;
  // A snapshot template: its interpreter also imports the modules code
  // uses most before it is saved, so every clone has them loaded.
  bool template_vm = false;
  // Descriptor number of QEMU's QMP control socket; -1 for none.
  int qmp_fd = -1;
  // Guest RAM in a file instead of anonymous memory: shared (a snapshot
  // template writes its RAM there) or private (a restored VM maps the
  // template's RAM copy-on-write: clones share its pages, the file never
  // changes).
  std::string memory_file;
  bool memory_shared = false;
  // Start paused, waiting for device state over QMP migrate-incoming.
  bool incoming = false;
  // After a restore, or at boot with a prestarted interpreter (not a
  // template), have the agent run a trivial program before its hello (TCG;
  // at boot the agent does so for Python only).
  bool warm_up = false;
  // The pids limit runs ask for by default; the warm-up at boot sets it.
  uint32_t run_pids_max = 0;
  // A package layer (SPEC F14): descriptor number, in QEMU's process, of
  // its image, opened read-only by the daemon (-1: none), and the language
  // whose interpreter the guest points at it.
  int layer_fd = -1;
  std::optional<Language> layer;
  // A builder VM's scratch disk: descriptor number, in QEMU's process, of a
  // file opened read-write (-1: none). The only disk a guest can write.
  int scratch_fd = -1;
  int scratch_ro_fd = -1;  // the same file read-only (QEMU wants both modes)
  // Off for a kernel built without ACPI: QEMU then lists the virtio-mmio
  // devices on its command line instead.
  bool acpi = true;
};

// Fixed guest kernel arguments; nothing user-controlled reaches them.
inline constexpr const char* kKernelCmdline =
    "console=ttyS0 quiet panic=-1 pci=off cryptomgr.notests random.trust_cpu=on";

// The input clock of QEMU's emulated local APIC timer under TCG
// (hw/intc/apic_common.c: one count per nanosecond).
inline constexpr uint64_t kQemuApicTimerHz = 1'000'000'000;

std::string kernel_cmdline(const VmSpec& spec);
// The -M machine and its options that every VM of `spec`'s host shares
// (a snapshot depends on them), without the per-VM memory backend.
std::string qemu_machine(const VmSpec& spec);
// Ports of the virtio-serial controller: port 0, which QEMU keeps for a
// console (there is none: the console is the serial port), then the
// agent's and the network's. A port more needs this raised.
inline constexpr int kVirtioSerialPorts = 3;
// The virtio-serial controller: its port count is part of the device state
// a snapshot holds.
std::string virtio_serial_device();
Result<std::vector<std::string>> qemu_argv(const VmSpec& spec);

// The host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW;
// 0 if the host has no invariant TSC.
uint32_t measure_tsc_khz();

// QEMU's option syntax: a ',' inside a value is written ',,'.
std::string qemu_escape(std::string_view value);

}  // namespace sandbox::daemon
