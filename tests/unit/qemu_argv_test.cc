#include <doctest/doctest.h>

#include <algorithm>

#include "daemon/qemu_argv.h"

using namespace sandbox;
using namespace sandbox::daemon;

namespace {

VmSpec spec() {
  VmSpec s;
  s.qemu = "qemu-system-x86_64";
  s.accel = Accel::tcg;
  s.memory_mb = 256;
  s.vcpus = 1;
  s.tcg_tb_size_mb = 32;
  s.kernel = "/img/vmlinux";
  s.initrd = "/img/initramfs.cpio";
  s.rootfs = "/img/rootfs.erofs";
  s.agent_fd = 3;
  s.net_fd = 9;
  return s;
}

}  // namespace

TEST_CASE("golden argv under TCG") {
  auto a = qemu_argv(spec());
  REQUIRE(a.ok());
  std::vector<std::string> expected = {
      "qemu-system-x86_64",
      "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      "-accel", "tcg,tb-size=32", "-cpu", "max",
      "-m", "256", "-smp", "1",
      "-kernel", "/img/vmlinux",
      "-initrd", "/img/initramfs.cpio",
      "-append", std::string(kKernelCmdline) + " noreplace-smp",
      "-drive", "file=/img/rootfs.erofs,format=raw,if=none,readonly=on,id=root",
      "-device", "virtio-blk-device,drive=root",
      "-device", "virtio-rng-device",
      "-device", "virtio-serial-device,max_ports=3",
      "-chardev", "socket,id=agent,fd=3",
      "-device", "virtserialport,chardev=agent,name=org.sandboxd.agent.0",
      "-chardev", "socket,id=net,fd=9",
      "-device", "virtserialport,chardev=net,name=org.sandboxd.net.0",
      "-serial", "stdio",
  };
  CHECK(*a == expected);
}

TEST_CASE("the virtio-serial controller has a port for each named port, after port 0") {
  auto s = spec();
  s.net_fd = 9;
  auto a = qemu_argv(s);
  REQUIRE(a.ok());
  auto ports = std::count_if(a->begin(), a->end(), [](const std::string& arg) { return arg.starts_with("virtserialport,"); });
  CHECK(ports + 1 == kVirtioSerialPorts);
}

TEST_CASE("under TCG the measured TSC frequency reaches the guest kernel") {
  auto s = spec();
  s.tsc_khz = 2596102;
  CHECK(kernel_cmdline(s) == std::string(kKernelCmdline) + " tsc_early_khz=2596102 tsc=reliable noreplace-smp");
  // KVM runs the guest's code natively: nothing to spare it.
  s.accel = Accel::kvm;
  CHECK(kernel_cmdline(s) == kKernelCmdline);
}

TEST_CASE("a warm VM asks its agent to prestart the interpreter") {
  auto s = spec();
  const std::string base = std::string(kKernelCmdline) + " noreplace-smp";
  s.prestart = Language::javascript;
  CHECK(kernel_cmdline(s) == base + " sandbox.prestart=javascript");
  // A template's interpreter preloads for its clones; without a prestart
  // there is nothing to preload.
  s.template_vm = true;
  CHECK(kernel_cmdline(s) == base + " sandbox.prestart=javascript sandbox.template");
  s.prestart.reset();
  CHECK(kernel_cmdline(s) == base);
}

TEST_CASE("a booted pool VM is warmed up before its hello, a template is not") {
  auto s = spec();
  const std::string base = std::string(kKernelCmdline) + " noreplace-smp sandbox.prestart=python";
  s.prestart = Language::python;
  s.warm_up = true;
  s.run_pids_max = 256;
  CHECK(kernel_cmdline(s) == base + " sandbox.warm_up sandbox.pids_max=256");
  s.run_pids_max = 0;
  CHECK(kernel_cmdline(s) == base + " sandbox.warm_up");
  // A template's state is what every clone starts from; each clone warms
  // itself up after its restore.
  s.template_vm = true;
  CHECK(kernel_cmdline(s) == base + " sandbox.template");
  // No interpreter waiting, nothing to warm up.
  s.template_vm = false;
  s.prestart.reset();
  CHECK(kernel_cmdline(s) == std::string(kKernelCmdline) + " noreplace-smp");
}

TEST_CASE("the host TSC measurement is plausible when there is one") {
  uint32_t khz = measure_tsc_khz();
  if (khz == 0) {
    MESSAGE("SKIPPED: host has no invariant TSC");
    return;
  }
  CHECK(khz > 100'000);      // 100 MHz
  CHECK(khz < 10'000'000);   // 10 GHz
}

TEST_CASE("a kernel without ACPI gets a machine that lists its devices on the command line") {
  auto s = spec();
  s.acpi = false;
  auto a = qemu_argv(s);
  REQUIRE(a.ok());
  CHECK(a->at(std::find(a->begin(), a->end(), "-M") - a->begin() + 1) ==
        "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off");
  CHECK(kernel_cmdline(s).ends_with(" lapic_timer_hz=1000000000 reboot=t"));
  s.acpi = true;
  CHECK(kernel_cmdline(s).find("reboot=") == std::string::npos);
  CHECK(kernel_cmdline(s).find("lapic_timer_hz=") == std::string::npos);
  // Under KVM the guest's TSC deadline timer needs no rate.
  s.acpi = false;
  s.accel = Accel::kvm;
  CHECK(kernel_cmdline(s).find("lapic_timer_hz=") == std::string::npos);
}

TEST_CASE("a restored VM maps the template's RAM privately and waits for its state") {
  auto s = spec();
  s.memory_file = "/var/lib/sandboxd/snapshots/k,ey/ram";
  s.incoming = true;
  s.qmp_fd = 4;
  auto a = qemu_argv(s);
  REQUIRE(a.ok());
  auto joined = [&] {
    std::string j;
    for (auto& x : *a) j += x + " ";
    return j;
  }();
  CHECK(joined.find("-M microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=mem ") != std::string::npos);
  CHECK(joined.find("-object memory-backend-file,id=mem,size=256M,mem-path=/var/lib/sandboxd/snapshots/k,,ey/ram,"
                    "share=off ") != std::string::npos);
  CHECK(joined.find("-chardev socket,id=qmp,fd=4 -mon chardev=qmp,mode=control ") != std::string::npos);
  CHECK(joined.ends_with("-incoming defer "));
  // Its RAM holds the booted kernel already: nothing to load.
  CHECK(joined.find("-kernel ") == std::string::npos);
  CHECK(joined.find("-initrd ") == std::string::npos);
  CHECK(joined.find("-append ") == std::string::npos);
  s.memory_shared = true;
  s.incoming = false;
  CHECK(qemu_argv(s)->at(std::find(a->begin(), a->end(), "-object") - a->begin() + 1).ends_with(",share=on"));
}

TEST_CASE("an inherited root image is named through an fd set, not a path") {
  auto s = spec();
  s.rootfs_fd = 7;
  auto a = qemu_argv(s);
  REQUIRE(a.ok());
  auto at = std::find(a->begin(), a->end(), "-add-fd");
  REQUIRE(at != a->end());
  CHECK(*(at + 1) == "fd=7,set=1,opaque=rootfs");
  auto drive = std::find(a->begin(), a->end(), "-drive");
  REQUIRE(drive != a->end());
  CHECK(*(drive + 1) == "file=/dev/fdset/1,format=raw,if=none,readonly=on,id=root");
  CHECK(std::find(a->begin(), a->end(), "/img/rootfs.erofs") == a->end());
}

TEST_CASE("KVM uses the host CPU and no translation cache option") {
  auto s = spec();
  s.accel = Accel::kvm;
  s.memory_mb = 2048;
  s.vcpus = 2;
  auto a = qemu_argv(s);
  REQUIRE(a.ok());
  auto at = [&](const std::string& opt) {
    for (size_t i = 0; i + 1 < a->size(); ++i)
      if ((*a)[i] == opt) return (*a)[i + 1];
    return std::string();
  };
  CHECK(at("-accel") == "kvm");
  CHECK(at("-cpu") == "host");
  CHECK(at("-m") == "2048");
  CHECK(at("-smp") == "2");
}

TEST_CASE("a comma in the root image path cannot add drive options") {
  auto s = spec();
  s.rootfs = "/img/x,format=qcow2,file.locking=off";
  auto a = qemu_argv(s);
  REQUIRE(a.ok());
  bool found = false;
  for (auto& arg : *a)
    if (arg.starts_with("file=")) {
      CHECK(arg == "file=/img/x,,format=qcow2,,file.locking=off,format=raw,if=none,readonly=on,id=root");
      found = true;
    }
  CHECK(found);
}

TEST_CASE("paths that could inject are refused") {
  auto s = spec();
  s.kernel = "/img/vmlinux\n-monitor stdio";
  CHECK(qemu_argv(s).error().code == ErrorCode::invalid_argument);
  s = spec();
  s.rootfs = "relative/rootfs.erofs";
  CHECK_FALSE(qemu_argv(s).ok());
  s = spec();
  s.initrd = "/img/a,/img/b";
  CHECK_FALSE(qemu_argv(s).ok());
  s = spec();
  s.accel = Accel::automatic;
  CHECK_FALSE(qemu_argv(s).ok());
  s = spec();
  s.memory_mb = 0;
  CHECK_FALSE(qemu_argv(s).ok());
}

TEST_CASE("qemu_escape doubles commas only") {
  CHECK(qemu_escape("a,b,,c") == "a,,b,,,,c");
  CHECK(qemu_escape("plain") == "plain");
}

TEST_CASE("a package layer is a second read-only disk, found by its serial, after the root") {
  auto s = spec();
  s.rootfs_fd = 7;
  s.layer_fd = 10;
  s.layer = Language::python;
  auto a = qemu_argv(s);
  REQUIRE(a.ok());
  std::vector<std::string> want = {"-add-fd", "fd=10,set=2,opaque=layer", "-drive",
                                   "file=/dev/fdset/2,format=raw,if=none,readonly=on,id=layer", "-device",
                                   "virtio-blk-device,drive=layer,serial=sandbox-layer"};
  auto at = std::search(a->begin(), a->end(), want.begin(), want.end());
  REQUIRE(at != a->end());
  auto root = std::find(a->begin(), a->end(), "virtio-blk-device,drive=root");
  CHECK(root < at);
  CHECK(kernel_cmdline(s).ends_with(" sandbox.layer=python"));
  // Without a descriptor there is no layer, whatever the language says.
  s.layer_fd = -1;
  auto none = qemu_argv(s);
  REQUIRE(none.ok());
  CHECK(std::find(none->begin(), none->end(), "fd=10,set=2,opaque=layer") == none->end());
  CHECK(kernel_cmdline(s).find("sandbox.layer") == std::string::npos);
}

TEST_CASE("a builder's scratch disk is the one writable disk, from both descriptors of one fd set") {
  auto s = spec();
  s.rootfs_fd = 7;
  s.scratch_fd = 11;
  s.scratch_ro_fd = 12;
  auto a = qemu_argv(s);
  REQUIRE(a.ok());
  std::vector<std::string> want = {"-add-fd", "fd=11,set=3,opaque=scratch", "-add-fd", "fd=12,set=3,opaque=scratch-ro",
                                   "-drive", "file=/dev/fdset/3,format=raw,if=none,id=scratch", "-device",
                                   "virtio-blk-device,drive=scratch,serial=sandbox-scratch"};
  CHECK(std::search(a->begin(), a->end(), want.begin(), want.end()) != a->end());
  // Every other drive stays read-only.
  for (const auto& arg : *a)
    if (arg.starts_with("file=") && arg.find("id=scratch") == std::string::npos)
      CHECK(arg.find("readonly=on") != std::string::npos);
  CHECK(kernel_cmdline(s).ends_with(" sandbox.builder"));
  // Half a pair is no disk: QEMU would fail to open it in the other mode.
  s.scratch_ro_fd = -1;
  auto half = qemu_argv(s);
  REQUIRE(half.ok());
  CHECK(std::find(half->begin(), half->end(), "fd=11,set=3,opaque=scratch") == half->end());
  CHECK(kernel_cmdline(s).find("sandbox.builder") == std::string::npos);
}
