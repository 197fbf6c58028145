#include "daemon/accel.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "common/unique_fd.h"

namespace sandbox::daemon {

HostFacts probe_host() {
  HostFacts f;
  f.kvm_pvm = ::access("/sys/module/kvm_pvm", F_OK) == 0;
  unique_fd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) {
    f.kvm_detail = std::string("/dev/kvm: ") + std::strerror(errno);
    return f;
  }
  int version = ::ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    f.kvm_detail = "/dev/kvm answered API version " + std::to_string(version);
    return f;
  }
  f.kvm_usable = true;
  return f;
}

AccelChoice choose_accel(Accel configured, const HostFacts& facts) {
  switch (configured) {
    case Accel::tcg:
      return {Accel::tcg, false, "configured accel=tcg (software emulation)"};
    case Accel::kvm:
      return {Accel::kvm, false, "configured accel=kvm"};
    case Accel::automatic:
      break;
  }
  if (!facts.kvm_usable)
    return {Accel::tcg, false, "KVM not usable (" + facts.kvm_detail + "); using TCG software emulation"};
  if (facts.kvm_pvm)
    return {Accel::tcg, false,
            "/dev/kvm is provided by kvm_pvm, a paravirtual nested hypervisor that cannot run the guest "
            "kernel; using TCG software emulation"};
  return {Accel::kvm, true, "KVM available; confirming with a probe boot"};
}

}  // namespace sandbox::daemon
