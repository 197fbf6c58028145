// The guest as code written for a workstation meets it: the everyday tools
// run as the sandbox user, TLS clients verify against the system CA store,
// a venv works in the home, and `sandboxctl images` describes exactly what
// the VMs boot. One VM answers every case: the run below is shared.
#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <sstream>

#include "common/json_parse.h"
#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;

extern "C" int c_api_images_check(const char* socket_path, char* why, size_t why_len);

namespace {

// Prints key=value lines, one fact each, as the sandbox user in its home.
// The TLS part serves HTTPS on loopback with a CA made here: a client
// trusts it only when that CA is put in OpenSSL's default store
// (SSL_CERT_FILE), which shows the client uses that store and not a list
// of its own.
constexpr const char* kProbe = R"SH(
cd ~
echo "user=$(id -un):$(id -u)"
echo "uname=$(uname -r)"
echo "cgroup2_opts=$(awk '$3 == "cgroup2" {print $4}' /proc/self/mounts)"
echo "python3_version=$(python3 --version 2>&1)"
echo "node_version=$(node --version)"
echo "bash_version=$(bash --version | head -1)"
echo "git=$(git --version)"
git init -q repo && (cd repo && echo hi > f && git add f &&
  git -c user.name=t -c user.email=t@example.invalid commit -qm first && echo "git_log=$(git log --format=%s)")
echo "curl=$(curl --version | head -1)"
echo "jq=$(jq -n 1)"
echo "sqlite3=$(sqlite3 :memory: 'select 1+1')"
echo 'hello zip' > z.txt && zip -q z.zip z.txt && rm z.txt && unzip -q z.zip && echo "zip=$(cat z.txt)"
echo "file=$(file -bL /bin/sh)"
printf 'a\nb\n' > p.txt && printf -- '--- p.txt\n+++ p.txt\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n' > p.diff &&
  patch -s p.txt < p.diff && echo "patch=$(tr '\n' ' ' < p.txt)"
echo "ps=$(ps -o comm= -p $$)"
seq 1000 > n.txt && xz -k n.txt && bzip2 -k n.txt &&
  echo "xz=$(xz -dc n.txt.xz | wc -l) bzip2=$(bzip2 -dc n.txt.bz2 | wc -l)"
echo "less=$(less --version | head -1)"
echo "tz=$(TZ=America/New_York date -d @0 +%Z%z)"
echo "ca_bundle=$(grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt)"
python3 -c 'import os, ssl
print("python_store=%d" % ssl.create_default_context().cert_store_stats()["x509_ca"])
name = {os.SCHED_OTHER: "other", os.SCHED_BATCH: "batch", os.SCHED_FIFO: "fifo", os.SCHED_IDLE: "idle"}
print("sched_user=%s" % name.get(os.sched_getscheduler(0)))
print("sched_agent=%s" % name.get(os.sched_getscheduler(1)))'
node -p '"node_roots=" + require("tls").rootCertificates.length + "\nnode_openssl_store=" +
  process.config.target_defaults.defines.includes("NODE_OPENSSL_CERT_STORE")'

ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
openssl req -x509 $ec -keyout ca.key -out ca.pem -subj /CN=sandboxd-test-ca -days 2 2>/dev/null
openssl req $ec -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null
echo 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile san.ext 2>/dev/null
openssl s_server -quiet -accept 127.0.0.1:8443 -cert srv.pem -key srv.key -www >/dev/null 2>&1 &
for i in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break; sleep 0.1; done
U=https://127.0.0.1:8443/
py='import sys, urllib.request
try: urllib.request.urlopen(sys.argv[1], timeout=60); print("ok")
except Exception as e: print("refused", e)'
js='require("https").get(process.argv[1], () => { console.log("ok"); process.exit(0) })
  .on("error", e => { console.log("refused " + e.code); process.exit(0) })'
echo "python_tls_default=$(python3 -c "$py" $U)"
echo "python_tls_ca=$(SSL_CERT_FILE=ca.pem python3 -c "$py" $U)"
echo "node_tls_default=$(node -e "$js" $U)"
echo "node_tls_ca=$(SSL_CERT_FILE=ca.pem node -e "$js" $U)"
echo "node_tls_bundled=$(SSL_CERT_FILE=ca.pem node --use-bundled-ca -e "$js" $U)"
echo "curl_tls_default=$(curl -sS -o /dev/null $U 2>&1 | head -1)"
echo "curl_tls_ca=$(CURL_CA_BUNDLE=ca.pem curl -sS -o /dev/null -w '%{http_code}' $U)"
echo "curl_cafile=$(curl -v -o /dev/null $U 2>&1 | sed -n 's/^\*  CAfile: //p')"
kill %1

# Without pip: installing it takes a minute under software emulation. The
# wheel ensurepip would install is checked instead.
python3 -m venv --without-pip ~/v && echo "venv=$(~/v/bin/python -c 'import sys; print(sys.prefix)')"
echo "ensurepip=$(python3 -c 'import ensurepip; print(ensurepip.version())')"
# Every module imported here from the root has bytecode Python loads
# without checking the source; the names of any that would be compiled.
python3 -c 'import sys, importlib.util, json, decimal, email.message, http.client
def checked(m):
    try:
        with open(importlib.util.cache_from_source(m.__file__), "rb") as f:
            return f.read(8)[4] != 1
    except Exception:
        return True
bad = [n for n, m in list(sys.modules.items()) if (getattr(m, "__file__", None) or "").endswith(".py") and checked(m)]
print("pyc_checked=%d\npyc_checked_names=%s" % (len(bad), " ".join(sorted(bad)[:5])))'
echo "done=1"
)SH";

struct Guest {
  Result<RunResult> run = Error::make(ErrorCode::internal, "not run");
  std::map<std::string, std::string> facts;
  std::string fact(const std::string& key) const {
    auto it = facts.find(key);
    return it == facts.end() ? "(missing)" : it->second;
  }
};

// The one VM of this file, booted by whichever case comes first.
const Guest& guest() {
  static const Guest g = [] {
    Guest g;
    // Software emulation: a dozen interpreter starts take most of a minute
    // there, more on a busy host.
    g.run = Client(TestDaemon::shared().socket()).run(make_request(Language::raw, kProbe, 280'000));
    if (g.run) {
      std::istringstream lines(g.run->stdout_data);
      for (std::string line; std::getline(lines, line);)
        if (auto eq = line.find('='); eq != std::string::npos) g.facts[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return g;
  }();
  REQUIRE_MESSAGE(g.run.ok(), g.run.error().describe());
  INFO("stderr: " << g.run->stderr_data);
  REQUIRE(g.fact("done") == "1");
  return g;
}

// The upstream part of a Debian version: no epoch, revision or repack tag.
std::string upstream(std::string v) {
  if (auto colon = v.find(':'); colon != std::string::npos) v.erase(0, colon + 1);
  if (auto dash = v.rfind('-'); dash != std::string::npos) v.resize(dash);
  if (auto tag = v.find_first_of("+~"); tag != std::string::npos) v.resize(tag);
  return v;
}

// "GNU bash, version 5.2.15(1)-release (...)" -> "5.2.15".
std::string between(const std::string& s, const std::string& before, const std::string& after) {
  auto start = s.find(before);
  if (start == std::string::npos) return "(no '" + before + "' in '" + s + "')";
  start += before.size();
  return s.substr(start, s.find(after, start) - start);
}

std::map<std::string, std::string> manifest_hashes() {
  std::map<std::string, std::string> by_role;
  std::ifstream in(images_dir() + "/manifest");
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string hash, role;
    if (line.starts_with("#") || !(f >> hash >> role)) continue;
    by_role[role] = hash;
  }
  return by_role;
}

}  // namespace

TEST_CASE("guest: the everyday tools run as the sandbox user") {
  const Guest& g = guest();
  CHECK(g.fact("user") == "sandbox:1000");
  CHECK(g.fact("git").starts_with("git version 2."));
  CHECK(g.fact("git_log") == "first");
  CHECK(g.fact("curl").starts_with("curl 7."));
  CHECK(g.fact("jq") == "1");
  CHECK(g.fact("sqlite3") == "2");
  CHECK(g.fact("zip") == "hello zip");
  CHECK(g.fact("file").starts_with("ELF 64-bit LSB"));
  CHECK(g.fact("patch") == "a c ");
  CHECK(g.fact("ps") == "bash");
  CHECK(g.fact("xz") == "1000 bzip2=1000");
  CHECK(g.fact("less").starts_with("less "));
  CHECK(g.fact("tz") == "EST-0500");
}

TEST_CASE("guest: the root's Python modules have bytecode that is loaded without a source check") {
  // The image's files share one timestamp, which no timestamp-checked
  // bytecode matches: each import would compile from source.
  INFO("modules with checked bytecode: " << guest().fact("pyc_checked_names"));
  CHECK(guest().fact("pyc_checked") == "0");
}

TEST_CASE("guest: the cgroup tree favours moving processes over forking them") {
  // A session moves its interpreter into each cell's cgroup; without this
  // option the first move after a pause waits for an RCU grace period.
  INFO("cgroup2 mount options: " << guest().fact("cgroup2_opts"));
  CHECK(guest().fact("cgroup2_opts").find("favordynmods") != std::string::npos);
}

TEST_CASE("guest: user code runs as a batch task, the agent as an ordinary one") {
  // The interpreter, woken by a hand-over, must not preempt the agent; the
  // agent, woken by the code's output or its end, still preempts it.
  CHECK(guest().fact("sched_user") == "batch");
  CHECK(guest().fact("sched_agent") == "other");
}

TEST_CASE("guest: Python, Node and curl verify TLS with the system CA store") {
  const Guest& g = guest();
  // Python's default context holds exactly Debian's bundle.
  int bundle = std::atoi(g.fact("ca_bundle").c_str());
  CHECK(bundle > 100);
  CHECK(g.fact("python_store") == std::to_string(bundle));
  CHECK(std::atoi(g.fact("node_roots").c_str()) > 0);
  CHECK(g.fact("node_openssl_store") == "true");
  // A server whose CA is in no store is refused by all three; put in
  // OpenSSL's default store it is trusted, by Node too unless told to use
  // its compiled-in list.
  CHECK(g.fact("python_tls_default").find("CERTIFICATE_VERIFY_FAILED") != std::string::npos);
  CHECK(g.fact("python_tls_ca") == "ok");
  CHECK(g.fact("node_tls_default") == "refused UNABLE_TO_VERIFY_LEAF_SIGNATURE");
  CHECK(g.fact("node_tls_ca") == "ok");
  CHECK(g.fact("node_tls_bundled") == "refused UNABLE_TO_VERIFY_LEAF_SIGNATURE");
  CHECK(g.fact("curl_tls_default").find("(60) SSL certificate problem") != std::string::npos);
  CHECK(g.fact("curl_tls_ca") == "200");
  CHECK(g.fact("curl_cafile") == "/etc/ssl/certs/ca-certificates.crt");
}

TEST_CASE("guest: python3 -m venv works in the home, and ensurepip has its wheel") {
  const Guest& g = guest();
  CHECK(g.fact("venv") == "/home/sandbox/v");
  // pip's version, e.g. "23.0.1"; an error or "(missing)" otherwise.
  std::string pip = g.fact("ensurepip");
  CHECK_MESSAGE((!pip.empty() && std::isdigit(static_cast<unsigned char>(pip[0])) && pip.find('.') != std::string::npos), pip);
}

TEST_CASE("sandboxctl images: the manifest's hashes, the guest's kernel and the versions the guest reports") {
  const Guest& g = guest();
  auto r = run_command({SANDBOXCTL_BIN, "images", "--json", "--socket", TestDaemon::shared().socket()});
  REQUIRE(r.exit_code == 0);
  auto json = parse_json(r.out);
  REQUIRE_MESSAGE(json.ok(), r.out);

  auto manifest = manifest_hashes();
  const auto* images = json->get("images");
  REQUIRE(images);
  // The root's three, and the package builder's root when the images have one.
  REQUIRE(images->items().size() == (manifest.count("builder") ? 4u : 3u));
  for (const auto& image : images->items()) {
    std::string role(image.get("role")->string().value_or(""));
    INFO("role " << role);
    CHECK(manifest.count(role) == 1);
    CHECK(image.get("sha256")->string() == manifest[role]);
  }
  CHECK(json->get("packages_sha256")->string() == manifest["packages"]);
  CHECK(json->get("kernel_release")->string() == g.fact("uname"));

  std::map<std::string, std::string> tools;
  for (const auto& t : json->get("tools")->items())
    tools[std::string(*t.get("name")->string())] = std::string(*t.get("version")->string());
  CHECK(upstream(tools["python3"]) == between(g.fact("python3_version"), "Python ", "\n"));
  CHECK(upstream(tools["nodejs"]) == between(g.fact("node_version"), "v", "\n"));
  CHECK(upstream(tools["bash"]) == between(g.fact("bash_version"), "version ", "("));
  for (const char* tool : {"git", "curl", "jq", "sqlite3", "ca-certificates", "python3-venv"}) {
    INFO(tool);
    CHECK(tools.count(tool) == 1);
  }

  // Every package of the root's own list, as the images directory holds it.
  std::ifstream list(images_dir() + "/packages");
  size_t lines = 0;
  for (std::string line; std::getline(list, line);) lines += !line.empty();
  CHECK(json->get("packages")->items().size() == lines);

  auto plain = run_command({SANDBOXCTL_BIN, "images", "--socket", TestDaemon::shared().socket()});
  CHECK(plain.exit_code == 0);
  CHECK(plain.out.find(manifest["rootfs"]) != std::string::npos);
  CHECK(plain.out.find("kernel release: " + g.fact("uname")) != std::string::npos);
  CHECK(plain.out.find("python3") != std::string::npos);

  char why[512] = "";
  CHECK_MESSAGE(c_api_images_check(TestDaemon::shared().socket().c_str(), why, sizeof why) == 0, why);
}
