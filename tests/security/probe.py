# Runs inside the guest as the sandbox user and tries what hostile code
# would try. Prints one "name=outcome" line per attempt: an errno name when
# the attempt failed, "ok" or a value when it did not. The test asserts the
# exact outcome of each.
import ctypes
import errno
import os
import signal
import socket
import stat
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
results = {}


def attempt(name, fn):
    try:
        value = fn()
        results[name] = "ok" if value is None else str(value)
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
    except Exception as e:  # a probe that breaks must show up, not vanish
        results[name] = "exception:" + type(e).__name__


def syscall(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    if r == 0 and nr == 56:  # a clone that succeeded: the child leaves at once
        os._exit(0)
    return "ok"


def status_field(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return line.split()[1]


def exists(path):
    return os.path.lexists(path)


def block_devices():
    found = []
    for root in ("/dev",):
        for name in os.listdir(root):
            st = os.lstat(os.path.join(root, name))
            if stat.S_ISBLK(st.st_mode):
                found.append(name)
    return ",".join(sorted(found)) or "none"


def setuid_files():
    count = 0
    for top in ("/usr", "/bin", "/sbin", "/lib", "/opt", "/etc"):
        for root, dirs, files in os.walk(top):
            for f in files:
                try:
                    st = os.lstat(os.path.join(root, f))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    count += 1
    return count


def loopback():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=5)
    a, _ = srv.accept()
    c.sendall(b"ping")
    return a.recv(4).decode()


def write(path):
    with open(path, "w") as f:
        f.write("x")


attempt("uid", os.getuid)
attempt("gid", os.getgid)
attempt("groups", lambda: ",".join(map(str, os.getgroups())))
attempt("no_new_privs", lambda: status_field("NoNewPrivs"))
attempt("seccomp_mode", lambda: status_field("Seccomp"))
attempt("own_process_group", lambda: os.getpgid(0) == os.getpid())
attempt("own_session", lambda: os.getsid(0) == os.getpid())
attempt("cwd", os.getcwd)
attempt("home", lambda: os.environ.get("HOME"))
attempt("stdin", lambda: repr(sys.stdin.read()))
attempt("write_root_fs", lambda: write("/etc/probe"))
attempt("write_usr", lambda: write("/usr/bin/probe"))
attempt("write_home", lambda: write(os.path.expanduser("~/probe")))
attempt("write_tmp", lambda: write("/tmp/probe"))
for dev in ("mem", "kmem", "port", "vda", "loop0", "loop-control", "console", "hvc0", "vport0p1", "vport1p1"):
    attempt("dev_" + dev, lambda dev=dev: exists("/dev/" + dev))
attempt("block_devices", block_devices)
attempt("write_proc_sys", lambda: write("/proc/sys/kernel/hostname"))
attempt("proc_1_visible", lambda: exists("/proc/1"))
attempt("proc_1_environ", lambda: open("/proc/1/environ").read())
attempt("kill_agent", lambda: os.kill(1, signal.SIGKILL))
attempt("ptrace_agent", lambda: syscall(101, 16, 1, 0, 0))  # PTRACE_ATTACH
attempt("mount", lambda: syscall(165, ctypes.c_char_p(b"none"), ctypes.c_char_p(b"/tmp"), ctypes.c_char_p(b"tmpfs"), 0, 0))
attempt("unshare_user", lambda: syscall(272, 0x10000000))  # CLONE_NEWUSER
attempt("unshare_mount", lambda: syscall(272, 0x00020000))  # CLONE_NEWNS
attempt("clone_newuser", lambda: syscall(56, 0x10000000 | 17, 0, 0, 0, 0))
attempt("clone3", lambda: syscall(435, 0, 0))
attempt("setns", lambda: syscall(308, 0, 0))
attempt("bpf", lambda: syscall(321, 5, 0, 0))  # BPF_PROG_LOAD
attempt("kexec_load", lambda: syscall(246, 0, 0, 0, 0))
attempt("init_module", lambda: syscall(175, 0, 0, ctypes.c_char_p(b"")))
attempt("finit_module", lambda: syscall(313, 0, ctypes.c_char_p(b""), 0))
attempt("keyctl", lambda: syscall(250, 0, 0, 0, 0, 0))
attempt("userfaultfd", lambda: syscall(323, 0))
attempt("perf_event_open", lambda: syscall(298, 0, 0, -1, -1, 0))
attempt("reboot", lambda: syscall(169, 0xfee1dead, 672274793, 0x4321FEDC, 0))
io_uring_params = ctypes.create_string_buffer(120)
attempt("io_uring_setup", lambda: syscall(425, 1, io_uring_params))
attempt("pidfd_getfd", lambda: syscall(438, os.pidfd_open(os.getpid()), 0, 0))
attempt("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close())
attempt("raw_socket6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6).close())
attempt("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close())
attempt("setuid_files", setuid_files)
attempt("net_devices", lambda: ",".join(sorted(os.listdir("/sys/class/net"))))
attempt("loopback", loopback)
attempt("leave_cgroup", lambda: write("/sys/fs/cgroup/cgroup.procs"))
attempt("raise_pids_max", lambda: write("/sys/fs/cgroup/exec/pids.max"))
attempt("host_marker_env", lambda: os.environ.get("SANDBOX_TEST_MARKER", "absent"))
attempt("host_file", lambda: open(os.environ["HOST_FILE"]).read())
# What the guest kernel was built with: sandboxd's own kernel has none of
# these, so their control files and tables do not exist at all.
attempt("kernel_release", lambda: os.uname().release)
for path in ("/proc/modules", "/proc/sys/kernel/modules_disabled", "/proc/sys/kernel/kexec_load_disabled",
             "/proc/sys/kernel/unprivileged_bpf_disabled", "/proc/sys/vm/unprivileged_userfaultfd",
             "/proc/sys/user/max_user_namespaces", "/proc/self/ns/user", "/sys/firmware/acpi", "/sys/bus/pci"):
    attempt("kernel_has:" + path, lambda path=path: exists(path))

for name, value in results.items():
    print(f"{name}={value}")
