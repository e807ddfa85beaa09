"""Command lines that start a sandbox: the interpreter, a clean environment, bwrap's and the fallback's argv.

The harness (wire.py + checker.py + harness.py) and the fallback launcher are compiled once per host
process and sent as marshalled code (the sandboxed interpreter is this same one), so a run pays no
compile time; nothing in these command lines is secret.
"""

from __future__ import annotations

import functools
import marshal
import os
import sys
from pathlib import Path

_HERE = Path(__file__).parent
SANDBOX_PYTHON = "/mnt/python"
WORK = "/mnt/work"
HARNESS_PARTS = ("wire.py", "checker.py", "harness.py")
RUN_COMPILED = "import marshal, sys; exec(marshal.loads(bytes.fromhex(sys.argv[1])), {'__name__': '__main__'})"


@functools.cache
def python() -> tuple[str, str | None, str]:
    """(host interpreter, prefix to bind at /mnt/python or None when /usr has it, path inside the sandbox)."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    if prefix == "/usr" or prefix.startswith("/usr/"):
        return exe, None, exe
    if not exe.startswith(prefix + "/"):
        exe = os.path.join(prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")
    return exe, prefix, SANDBOX_PYTHON + exe[len(prefix):]


def child_env(python_bound: bool) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": WORK, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
    if python_bound:
        env["LD_LIBRARY_PATH"] = SANDBOX_PYTHON + "/lib"
    return env


@functools.cache
def harness_code() -> bytes:
    """The harness, compiled: what the sandboxed interpreter reads as its first stdin frame."""
    source = "\n\n".join((_HERE / name).read_text() for name in HARNESS_PARTS)
    return marshal.dumps(compile(source, "<harness>", "exec"))


@functools.cache
def _launcher_hex() -> str:
    return marshal.dumps(compile((_HERE / "launcher.py").read_text(), "<launcher>", "exec")).hex()


def harness_argv(inner_python: str, cfg: dict) -> list[str]:
    from envs.sandbox.harness import BOOTSTRAP

    return [inner_python, "-S", "-s", "-B", "-c", BOOTSTRAP, marshal.dumps(cfg).hex()]


def bwrap_argv(inner: list[str], env: dict[str, str], prefix: str | None, *, disk_bytes: int,
               seccomp_fd: int | None, own_tmpfs: bool) -> list[str]:
    """bubblewrap around `inner`. As root (`own_tmpfs`) the harness mounts /tmp and the work dir itself,
    capped in bytes and inodes (bwrap caps bytes only), with CAP_SYS_ADMIN it drops before any untrusted
    code runs; otherwise bwrap's size-capped tmpfs. No /proc: host paths show in its mountinfo."""
    argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
    if os.geteuid() == 0:  # root caller: no user namespace; the harness setuid()s to the run's own uids
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if own_tmpfs:
            argv += ["--cap-add", "CAP_SYS_ADMIN"]
    else:  # unprivileged caller: a user namespace (per-run RLIMIT_NPROC accounting), no nested ones
        argv += ["--unshare-user", "--disable-userns"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    for k, v in env.items():
        argv += ["--setenv", k, v]
    argv += ["--ro-bind", "/usr", "/usr", "--perms", "0755", "--dir", "/mnt"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + name
        if os.path.islink(host):
            argv += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            argv += ["--ro-bind", host, host]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--dev", "/dev"]
    if prefix:
        argv += ["--ro-bind", prefix, SANDBOX_PYTHON]
    if own_tmpfs:
        argv += ["--dir", "/tmp", "--dir", WORK]
    else:
        size = str(disk_bytes)
        argv += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp", "--perms", "1777", "--size", size,
                 "--tmpfs", WORK]
    argv += ["--remount-ro", "/", "--chdir", WORK, "--", *inner]
    return argv


def fallback_argv(inner: list[str], env: dict[str, str], prefix: str | None, *, disk_kb: int, inodes: int,
                  seccomp: bytes | None) -> list[str]:
    host_python = python()[0]
    cfg = {"argv": inner, "env": env, "python_prefix": prefix, "disk_kb": disk_kb, "inodes": inodes,
           "seccomp": seccomp}
    return ["unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--",
            host_python, "-S", "-s", "-B", "-c", RUN_COMPILED, _launcher_hex(), marshal.dumps(cfg).hex()]
