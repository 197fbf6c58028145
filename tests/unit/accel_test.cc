#include <doctest/doctest.h>

#include <algorithm>

#include "daemon/accel.h"
#include "daemon/access.h"

using namespace sandbox::daemon;

TEST_CASE("auto never trusts /dev/kvm alone") {
  HostFacts none{false, false, "/dev/kvm: No such file or directory"};
  auto c = choose_accel(Accel::automatic, none);
  CHECK(c.accel == Accel::tcg);
  CHECK_FALSE(c.needs_probe_boot);
  CHECK(c.reason.find("No such file") != std::string::npos);

  HostFacts pvm{true, true, ""};
  c = choose_accel(Accel::automatic, pvm);
  CHECK(c.accel == Accel::tcg);
  CHECK(c.reason.find("kvm_pvm") != std::string::npos);

  HostFacts real{true, false, ""};
  c = choose_accel(Accel::automatic, real);
  CHECK(c.accel == Accel::kvm);
  CHECK(c.needs_probe_boot);
}

TEST_CASE("explicit choices are obeyed without a probe") {
  HostFacts pvm{true, true, ""};
  CHECK(choose_accel(Accel::kvm, pvm).accel == Accel::kvm);
  CHECK_FALSE(choose_accel(Accel::kvm, pvm).needs_probe_boot);
  CHECK(choose_accel(Accel::tcg, HostFacts{true, false, ""}).accel == Accel::tcg);
}

TEST_CASE("socket peers: root, the daemon's uid, listed uids and groups") {
  AccessPolicy p{{1001}, {2000}, 500};
  CHECK(peer_allowed(p, 0, {}));
  CHECK(peer_allowed(p, 500, {}));
  CHECK(peer_allowed(p, 1001, {}));
  CHECK(peer_allowed(p, 1002, {2000}));        // primary group
  CHECK(peer_allowed(p, 1003, {1003, 2000}));  // supplementary group
  CHECK_FALSE(peer_allowed(p, 1004, {1004, 27}));
  CHECK_FALSE(peer_allowed(AccessPolicy{{}, {}, 500}, 65534, {}));
  CHECK(is_operator(p, 0));
  CHECK(is_operator(p, 500));
  CHECK_FALSE(is_operator(p, 1001));
  // Groups come from the user database, whatever a process claims: root's
  // entry says it is in group 0.
  auto root_groups = groups_of(0, std::nullopt);
  CHECK(std::find(root_groups.begin(), root_groups.end(), 0u) != root_groups.end());
  CHECK(groups_of(4'000'000'000u, 77) == std::vector<gid_t>{77});
}
