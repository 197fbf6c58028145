// Package specifiers (common/packages.h): what reaches an installer's
// command line in the builder VM, so every way to smuggle a source, an
// option or shell syntax is tried here and must be refused by name.
#include <doctest/doctest.h>

#include <sandbox/limits.h>

#include "common/packages.h"
#include "common/validate.h"

using namespace sandbox;

namespace {

PackagePolicy pinned() { return PackagePolicy{}; }
PackagePolicy relaxed() {
  PackagePolicy p;
  p.require_pinned = false;
  return p;
}

std::string refusal(Language l, std::string_view text, const PackagePolicy& p = PackagePolicy{}) {
  auto r = parse_package(l, text, p);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::package_not_allowed);
  return r.error().message;
}

}  // namespace

TEST_CASE("packages: pinned Python requirements are accepted and canonical") {
  auto r = parse_package(Language::python, "Requests==2.31.0", pinned());
  REQUIRE(r.ok());
  CHECK(r->name == "requests");
  CHECK(r->pinned);
  CHECK(r->canonical == "requests==2.31.0");
  auto n = parse_package(Language::python, "Zope.Interface_Foo==6.0", pinned());
  REQUIRE(n.ok());
  CHECK(n->canonical == "zope-interface-foo==6.0");
  auto e = parse_package(Language::python, "requests[socks,Security]==2.31.0", pinned());
  REQUIRE(e.ok());
  CHECK(e->canonical == "requests[security,socks]==2.31.0");
  CHECK(parse_package(Language::python, "torch==2.1.0+cpu", pinned()).ok());
  CHECK(parse_package(Language::python, "numpy==1.26.0rc1", pinned()).ok());
}

TEST_CASE("packages: unpinned requirements are refused unless the operator relaxes pinning") {
  CHECK(refusal(Language::python, "requests").find("not pinned") != std::string::npos);
  CHECK(refusal(Language::python, "requests>=2").find("not pinned") != std::string::npos);
  CHECK(refusal(Language::python, "requests==2.*").find("not pinned") != std::string::npos);
  CHECK(refusal(Language::python, "requests==2.31,<3").find("not pinned") != std::string::npos);
  CHECK(refusal(Language::javascript, "left-pad").find("not pinned") != std::string::npos);
  CHECK(refusal(Language::javascript, "left-pad@^1.3.0").find("not pinned") != std::string::npos);
  CHECK(refusal(Language::javascript, "left-pad@latest").find("not pinned") != std::string::npos);

  auto r = parse_package(Language::python, "requests<3,>=2", relaxed());
  REQUIRE(r.ok());
  CHECK(r->canonical == "requests<3,>=2");  // clauses sorted: one key for one meaning
  CHECK_FALSE(r->pinned);
  CHECK(parse_package(Language::python, "requests", relaxed()).ok());
  CHECK(parse_package(Language::javascript, "left-pad@^1.3.0", relaxed()).ok());
  CHECK(parse_package(Language::javascript, "left-pad", relaxed()).ok());
}

TEST_CASE("packages: npm names and exact versions") {
  auto r = parse_package(Language::javascript, "left-pad@1.3.0", pinned());
  REQUIRE(r.ok());
  CHECK(r->canonical == "left-pad@1.3.0");
  auto s = parse_package(Language::javascript, "@types/node@20.10.5", pinned());
  REQUIRE(s.ok());
  CHECK(s->name == "@types/node");
  CHECK(parse_package(Language::javascript, "pkg@1.0.0-beta.2+build.5", pinned()).ok());
  refusal(Language::javascript, "Left-Pad@1.3.0");  // npm names are lower case
  refusal(Language::javascript, "left-pad@1.3");
  refusal(Language::javascript, "_private@1.0.0");
  refusal(Language::javascript, "@scope@1.0.0");
}

TEST_CASE("packages: sources other than the index, options and shell syntax are refused") {
  for (auto bad : {"https://evil.example/x.whl", "git+https://github.com/x/y", "file:///tmp/x", "./local",
                   "/abs/path", "../up", "pkg @ https://x/y.whl", "--index-url=http://evil", "-e.",
                   "-rrequirements.txt", "pkg==1.0;python_version>'3'", "pkg==1.0 --no-deps", "pkg==1.0|sh",
                   "pkg==1.0&&id", "pkg==$(id)", "pkg==`id`", "pkg==1.0\n--index-url=x", "pkg[--pre]==1.0",
                   "pkg[a b]==1.0", "pkg===1.0", "pkg==1.0\\", "pkg=='1.0'", "", "==1.0"}) {
    INFO(bad);
    refusal(Language::python, bad, relaxed());
  }
  for (auto bad : {"git+https://github.com/x/y", "github:x/y", "x/y", "npm:other@1.0.0", "file:../x",
                   "left-pad@file:../x", "left-pad@https://x/y.tgz", "--registry=http://evil", "-g",
                   "left-pad@1.3.0 evil", "left-pad@1.0.0||2.0.0", "left-pad@$(id)", "left-pad@../x"}) {
    INFO(bad);
    refusal(Language::javascript, bad, relaxed());
  }
}

TEST_CASE("packages: the refusal names the entry, and control characters are not echoed") {
  CHECK(refusal(Language::python, "requests").find("'requests'") != std::string::npos);
  auto m = refusal(Language::python, "a\x1b[31m==1");
  CHECK(m.find('\x1b') == std::string::npos);
}

TEST_CASE("packages: bounds on length, count, duplicates and languages") {
  std::string long_name(limits::kMaxPackageSpecBytes, 'a');
  refusal(Language::python, long_name + "==1");
  std::vector<std::string> many;
  for (size_t i = 0; i <= limits::kMaxPackages; ++i) many.push_back("p" + std::to_string(i) + "==1.0");
  auto r = parse_packages(Language::python, many, pinned());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::invalid_argument);
  many.pop_back();
  CHECK(parse_packages(Language::python, many, pinned()).ok());

  auto dup = parse_packages(Language::python, {"Requests==2.31.0", "requests==2.30.0"}, pinned());
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.error().message.find("named twice") != std::string::npos);

  auto raw = parse_packages(Language::raw, {"x==1"}, pinned());
  REQUIRE_FALSE(raw.ok());
  CHECK(raw.error().code == ErrorCode::package_not_allowed);
  CHECK(parse_packages(Language::raw, {}, pinned()).ok());
}

TEST_CASE("packages: the canonical list is sorted, so the same set is one key") {
  auto a = parse_packages(Language::python, {"zeta==1", "Alpha==2"}, pinned());
  auto b = parse_packages(Language::python, {"alpha==2", "zeta==1"}, pinned());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(canonical_packages(*a) == canonical_packages(*b));
  CHECK(canonical_packages(*a) == std::vector<std::string>{"alpha==2", "zeta==1"});
}

TEST_CASE("packages: the allowlist data file") {
  auto p = parse_package_allowlist("# top packages\npython Requests\npython numpy  # comment\njavascript left-pad\n\n",
                                   pinned());
  REQUIRE(p.ok());
  CHECK(parse_package(Language::python, "requests==2.31.0", *p).ok());
  CHECK(parse_package(Language::javascript, "left-pad@1.3.0", *p).ok());
  auto m = refusal(Language::python, "pandas==2.1.4", *p);
  CHECK(m.find("allowlist") != std::string::npos);
  refusal(Language::javascript, "lodash@4.17.21", *p);

  CHECK_FALSE(parse_package_allowlist("ruby rails\n", pinned()).ok());
  CHECK_FALSE(parse_package_allowlist("python a b\n", pinned()).ok());
  CHECK_FALSE(parse_package_allowlist("python ../x\n", pinned()).ok());
  CHECK_FALSE(load_package_allowlist("/nonexistent/allowlist", pinned()).ok());
}

TEST_CASE("packages: libsandbox checks the syntax early, not the operator's pinning policy") {
  RunRequest r{Language::python, "print(1)", {}, std::chrono::milliseconds(30'000), 256};
  r.packages = {"requests"};
  CHECK(validate(r).ok());
  r.packages = {"https://x/y.whl"};
  CHECK(validate(r).error().code == ErrorCode::package_not_allowed);
  SessionOptions o;
  o.language = Language::javascript;
  o.packages = {"left-pad@1.3.0", "-g"};
  CHECK(validate(o).error().code == ErrorCode::package_not_allowed);
}

TEST_CASE("packages: Debian packages are 'apt:NAME=VERSION' for any language, strictly") {
  for (auto l : {Language::python, Language::javascript, Language::raw}) {
    auto r = parse_package(l, "apt:libjq1=1:1.6-2.1+b1", pinned());
    REQUIRE(r.ok());
    CHECK(r->apt);
    CHECK(r->name == "apt:libjq1");
    CHECK(r->version == "1:1.6-2.1+b1");
    CHECK(r->canonical == "apt:libjq1=1:1.6-2.1+b1");
  }
  CHECK(parse_package(Language::raw, "apt:g++=4:12.2.0-3", pinned()).ok());
  CHECK(refusal(Language::raw, "apt:jq").find("not pinned") != std::string::npos);
  CHECK(parse_package(Language::raw, "apt:jq", relaxed())->canonical == "apt:jq");
  for (auto bad : {"apt:", "apt:j", "apt:Jq=1", "apt:-jq=1", "apt:jq=", "apt:jq=a1", "apt:jq=1 2", "apt:jq=1;id",
                   "apt:jq=1/../x", "apt:jq/bookworm", "apt:./x.deb", "apt:/tmp/x.deb", "apt:jq=$(id)",
                   "apt:jq=1\n-o=x", "apt:http://x/y.deb", "apt:jq=1=2", "apt:jq:amd64=1"}) {
    INFO(bad);
    refusal(Language::raw, bad, relaxed());
  }
  // Raw runs take only Debian packages; a Python and a Debian name never collide.
  CHECK(refusal(Language::raw, "requests==2.31.0").find("only Debian packages") != std::string::npos);
  auto mixed = parse_packages(Language::python, {"apt:jq=1.6-2.1", "jq==1.6.0"}, pinned());
  REQUIRE(mixed.ok());
  CHECK(canonical_packages(*mixed) == std::vector<std::string>{"apt:jq=1.6-2.1", "jq==1.6.0"});
  CHECK_FALSE(parse_packages(Language::raw, {"apt:jq=1", "apt:jq=2"}, pinned()).ok());
  CHECK(parse_packages(Language::raw, {"apt:jq=1", "apt:zip=3.0-13"}, pinned()).ok());
}

TEST_CASE("packages: the allowlist names Debian packages as 'apt NAME'") {
  auto p = parse_package_allowlist("python requests\napt jq\n", pinned());
  REQUIRE(p.ok());
  CHECK(parse_package(Language::raw, "apt:jq=1.6-2.1", *p).ok());
  CHECK(refusal(Language::raw, "apt:sqlite3=3.40.1-2", *p).find("allowlist") != std::string::npos);
  CHECK_FALSE(parse_package_allowlist("apt Jq\n", pinned()).ok());
}
