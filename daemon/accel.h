// Which accelerator runs the guests. /dev/kvm existing is not enough: a
// nested paravirtual KVM (kvm_pvm) accepts the device but cannot run our
// guest kernel, so `auto` trusts only a probe boot.
#pragma once

#include <string>

#include "daemon/config.h"

namespace sandbox::daemon {

struct HostFacts {
  bool kvm_usable = false;  // /dev/kvm opens and answers KVM_GET_API_VERSION
  bool kvm_pvm = false;     // the kvm_pvm module is loaded
  std::string kvm_detail;   // why KVM is not usable, when it is not
};

HostFacts probe_host();

struct AccelChoice {
  Accel accel = Accel::tcg;  // kvm or tcg
  bool needs_probe_boot = false;  // auto with a plausible KVM: boot once to be sure
  std::string reason;
};

// Pure decision from configuration and host facts.
AccelChoice choose_accel(Accel configured, const HostFacts& facts);

}  // namespace sandbox::daemon
