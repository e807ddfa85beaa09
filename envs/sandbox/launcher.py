"""The fallback sandbox's init process, used when bubblewrap is absent (root callers only).

Started as root by ``unshare --mount --net --pid --ipc --uts --fork --kill-child``, so it is pid 1 of fresh
namespaces. It builds a new root on a small tmpfs holding only read-only binds of /usr (and the
/bin, /lib... links or dirs beside it), the Python prefix at /mnt/python, /etc/ld.so.cache, five device
nodes, and writable /tmp and /mnt/work (each capped in bytes and inodes); no /proc, so neither host
paths (mountinfo) nor other processes show. It chroots into it, sets no-new-privs, installs the seccomp
filter (seccomp.py), forks the harness (which drops to unprivileged uids before it runs any untrusted
input), reaps orphans, and exits with the harness's status (128 + signal when it was killed, as bwrap
does). When it exits, the kernel kills everything left in the pid namespace. Run compiled, from a hex
marshal in argv[1], with its config as a hex marshal in argv[2]; stdlib only.
"""

import ctypes
import marshal
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


def _enc(s):
    return s.encode() if s is not None else None


def _mount(src, dst, fstype, flags, data=None):
    enc = _enc
    if _libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {dst}: {os.strerror(err)}")


def _bind_ro(src, dst):
    _mount(src, dst, None, MS_BIND | MS_REC)
    _mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def build_root(cfg, root="/tmp"):
    """Populate a tmpfs at `root` (any existing directory; only this mount namespace sees it)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=256,mode=755")
    for name in SYSTEM_DIRS:
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), root + host)
        elif os.path.isdir(host):
            os.mkdir(root + host)
            _bind_ro(host, root + host)
    os.makedirs(root + "/etc")
    if os.path.isfile("/etc/ld.so.cache"):
        open(root + "/etc/ld.so.cache", "w").close()
        _bind_ro("/etc/ld.so.cache", root + "/etc/ld.so.cache")
    os.mkdir(root + "/dev")
    for dev in DEVICES:
        open(root + "/dev/" + dev, "w").close()
        _mount("/dev/" + dev, root + "/dev/" + dev, None, MS_BIND)
        _mount(None, root + "/dev/" + dev, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC)
    if cfg.get("python_prefix"):
        os.makedirs(root + "/mnt/python")
        _bind_ro(cfg["python_prefix"], root + "/mnt/python")
    for d in ("/tmp", "/mnt/work"):
        os.makedirs(root + d, exist_ok=True)
        _mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={cfg['disk_kb']}k,nr_inodes={cfg['inodes']},mode=1777")
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chroot(root)
    os.chdir("/mnt/work")


def install_seccomp(program):
    """Load a classic-BPF program (struct sock_filter[] as bytes) as this process's seccomp filter."""
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = Prog(len(program) // 8, program)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main():
    cfg = marshal.loads(bytes.fromhex(sys.argv[2]))
    build_root(cfg)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:  # no exec can ever gain privileges again
        os._exit(126)
    if cfg.get("seccomp"):
        install_seccomp(cfg["seccomp"])
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
        finally:
            os._exit(127)
    while True:  # pid 1 reaps every orphan until the harness itself ends
        try:
            done, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
