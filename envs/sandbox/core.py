"""Run untrusted Python in a sandbox: bubblewrap when present, an unshare+chroot fallback, never bare by default.

Every run gets fresh namespaces (pid, net, mount, ipc, uts), a root holding only read-only system
directories and the Python prefix (no /proc), /tmp and /mnt/work (the work dir) on tmpfs capped in bytes
and inodes, a clean environment, rlimits (CPU, address space, file size, open files, processes, no core
dumps) and a seccomp filter (no keyring, no nested user namespaces, no ptrace: seccomp.py). Inside, the
harness splits in two (harness.py): the program runs as an unprivileged uid of its own (one per
concurrent run, so RLIMIT_NPROC holds even when the caller is root) and answers calls as data; the
checks run in a second process, as a second uid, that decides the verdict and alone holds the result
fd. The host enforces the wall clock (SIGKILL to the whole process group; the pid namespace takes every
descendant with it) and caps the output it keeps. See ``Sandbox`` for the modes and what each protects.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

from envs.errors import UserError
from envs.sandbox.commands import (
    WORK,
    bwrap_argv,
    child_env,
    fallback_argv,
    harness_argv,
    harness_code,
    python,
)
from envs.sandbox.seccomp import program as seccomp_program
from envs.sandbox.streams import Streams
from envs.sandbox.verdicts import Check, Result, Status, build_result, parse_records

Mode = Literal["auto", "bwrap", "fallback", "none"]
UNSAFE_ENV = "SELFIMPROVE_UNSAFE_NO_SANDBOX"
_python = python  # the name bench/sandbox.py imports
__all__ = ["UNSAFE_ENV", "Check", "Limits", "Mode", "Result", "Sandbox", "Status", "available",
           "missing_prerequisite"]


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Output beyond `output_bytes` per stream is dropped; a run that writes
    more than `max_output_bytes` in all is killed with status 'limit'."""

    timeout: float = 5.0
    cpu_seconds: int | None = None  # default: the wall timeout rounded up, plus one
    memory_mb: int = 1024  # RLIMIT_AS, per process
    file_size_mb: int = 16  # RLIMIT_FSIZE
    disk_mb: int = 64  # each of the /tmp and work-dir tmpfs
    inodes: int = 10_000  # files and directories in each of those (bwrap as a normal user: no cap)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 32  # RLIMIT_NPROC, per run (each run has its own uid)
    output_bytes: int = 64 * 1024
    max_output_bytes: int = 8 * 1024 * 1024

    def rlimits(self) -> dict[str, tuple[int, int]]:
        cpu = self.cpu_seconds if self.cpu_seconds is not None else int(self.timeout) + 1
        mb = 1024 * 1024
        return {
            "RLIMIT_CPU": (cpu, cpu + 1),
            "RLIMIT_AS": (self.memory_mb * mb, self.memory_mb * mb),
            "RLIMIT_FSIZE": (self.file_size_mb * mb, self.file_size_mb * mb),
            "RLIMIT_NOFILE": (self.open_files, self.open_files),
            "RLIMIT_NPROC": (self.processes, self.processes),
            "RLIMIT_CORE": (0, 0),
        }


# --- unprivileged uids: a pair per concurrent run (the program's, the checker's) ---------------------
class _UidPool:
    def __init__(self, size: int = 256):
        base = 1_900_000_000 + (os.getpid() % 50_000) * 2 * size  # distinct ranges for concurrent processes
        self.size = size
        self.range = range(base, base + 2 * size)  # program uids, then checker uids
        self._free = list(reversed(range(base, base + size)))
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def take(self):
        """(program uid, checker uid), held for one run."""
        with self._cond:
            while not self._free:
                self._cond.wait()
            uid = self._free.pop()
        try:
            yield uid, uid + self.size
        finally:
            with self._cond:
                self._free.append(uid)
                self._cond.notify()


_UIDS = _UidPool()


def _frame(obj, *, raw: bool = False) -> bytes:
    data = obj if raw else marshal.dumps(obj)
    return len(data).to_bytes(4, "big") + data


# --- one run -----------------------------------------------------------------------------------------
def _execute(mode: str, program: str, checks: list[Check], limits: Limits, uids: tuple[int, int] | None,
             objects: bool = False) -> Result:
    """Start one sandbox in `mode`, feed it the harness, the program and the checks, and read its verdict."""
    host_python, prefix, inner_python = python()
    nonce = secrets.token_hex(16)
    result_r, result_w = os.pipe()
    fds = [result_w]
    cfg = {"uid": uids[0] if uids else None, "checker_uid": uids[1] if uids else None,
           "rlimits": limits.rlimits(), "result_fd": result_w, "mounts": None}
    disk = limits.disk_mb * 1024 * 1024
    filt = seccomp_program()
    workdir = None
    kwargs: dict = {}
    if mode == "bwrap":
        own_tmpfs = os.geteuid() == 0
        if own_tmpfs:
            cfg["mounts"] = [("/tmp", disk, limits.inodes), (WORK, disk, limits.inodes)]
        seccomp_fd = None
        if filt is not None:
            seccomp_fd, w = os.pipe()
            os.write(w, filt)
            os.close(w)
            fds.append(seccomp_fd)
        argv = bwrap_argv(harness_argv(inner_python, cfg), child_env(prefix is not None), prefix,
                          disk_bytes=disk, seccomp_fd=seccomp_fd, own_tmpfs=own_tmpfs)
    elif mode == "fallback":
        argv = fallback_argv(harness_argv(inner_python, cfg), child_env(prefix is not None), prefix,
                             disk_kb=limits.disk_mb * 1024, inodes=limits.inodes, seccomp=filt)
    else:  # none: same harness, no isolation
        workdir = tempfile.mkdtemp(prefix="selfimprove-unsafe-")
        argv = harness_argv(host_python, cfg)
        kwargs = {"cwd": workdir, "env": {**child_env(False), "HOME": workdir, "TMPDIR": workdir}}
    kwargs.setdefault("env", {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    payload = (_frame(harness_code(), raw=True) + _frame({"program": program, "objects": objects})
               + _frame({"checks": [(c.code, c.counted) for c in checks], "nonce": nonce, "objects": objects}))
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=fds, start_new_session=True, **kwargs)
    except BaseException:
        os.close(result_r)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    streams = Streams(proc, result_r, payload, limits)
    try:
        stop = streams.pump(start + limits.timeout)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        streams.drain(grace=2.0)
        streams.close()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return build_result(checks, parse_records(bytes(streams.bufs["result"]), nonce), stop=stop, rc=rc, mode=mode,
                        limits=limits, stdout=_decode(streams.bufs["stdout"]),
                        stderr=_decode(streams.bufs["stderr"]), truncated=streams.truncated,
                        duration=time.monotonic() - start)


def _decode(buf: bytearray) -> str:
    return bytes(buf).decode("utf-8", errors="replace")


class Sandbox:
    """Runs untrusted Python programs with tests, one sandbox per run, many runs concurrently.

    The verdict is decided by the harness's checker process, which the program cannot reach: see
    harness.py. Modes:

    - ``bwrap`` (bubblewrap): new pid/net/ipc/uts/mount namespaces, a root of read-only binds (/usr, the
      Python prefix), tmpfs /tmp and work dir, a clean environment, the seccomp filter; as root no user
      namespace, and the harness (with CAP_SETUID/SETGID, and CAP_SYS_ADMIN to mount the capped tmpfs)
      drops to the run's two uids; as a normal user a user namespace with nested ones disabled, one uid
      for both halves (the checker is then non-dumpable: the program can still signal it, which only
      ever fails the run) and no inode cap.
    - ``fallback`` (no bubblewrap; needs root and util-linux ``unshare``): the same namespaces from
      ``unshare``, a chroot (not pivot_root) into a tmpfs root built by ``launcher.py`` with the same
      read-only nosuid binds, no-new-privs, the seccomp filter, the same uid drops and rlimits. What keeps
      the payload in is the chroot plus the unprivileged uid (which cannot chroot back out); it relies
      on our ~100 lines of mount code instead of bwrap's long-reviewed setup, and a non-root caller gets
      no fallback at all.
    - ``none``: a plain subprocess with rlimits, a clean environment and a temporary cwd, but NO
      filesystem, network or process isolation (as root RLIMIT_NPROC does not hold, and the program
      runs as the checker's uid). Refused unless ``i_understand_this_is_unsafe=True`` or the
      environment variable SELFIMPROVE_UNSAFE_NO_SANDBOX=1.
    - ``auto``: bwrap if it works here, else the fallback if it works, else a UserError.

    Neither mode caps memory bandwidth; RLIMIT_AS bounds memory per process, RLIMIT_NPROC the process
    count, so a run's memory is at most about processes × memory_mb.
    """

    def __init__(self, mode: Mode = "auto", limits: Limits | None = None, workers: int | None = None,
                 i_understand_this_is_unsafe: bool = False):
        self.limits = limits or Limits()
        self.workers = workers or max(2, 2 * (os.cpu_count() or 1))
        if mode == "none":
            if not (i_understand_this_is_unsafe or os.environ.get(UNSAFE_ENV) == "1"):
                raise UserError("sandbox mode 'none' runs generated code without isolation; pass "
                                f"i_understand_this_is_unsafe=True or set {UNSAFE_ENV}=1 to allow it")
        elif mode == "auto":
            found: Mode | None = ("bwrap" if available("bwrap") is None
                                  else "fallback" if available("fallback") is None else None)
            if found is None:
                raise UserError("no sandbox works on this machine: install bubblewrap (apt-get install "
                                f"bubblewrap) [{available('bwrap')}] or run as root with util-linux "
                                f"'unshare' [{available('fallback')}]")
            mode = found
        elif mode in ("bwrap", "fallback"):
            why = available(mode)
            if why is not None:
                raise UserError(f"sandbox mode '{mode}' is not available here: {why}")
        else:
            raise UserError(f"unknown sandbox mode '{mode}'; use auto, bwrap, fallback or none")
        self.mode: str = mode

    def run(self, program: str, checks: Sequence[str | Check] = (), *, timeout: float | None = None,
            objects: bool = False) -> Result:
        """Run `program`, then each check against its functions and values; `timeout` overrides the
        wall-clock limit. With `objects`, values that are not built-in reach the checks as opaque
        references (for tasks whose tests build and pass the program's own objects); otherwise such a
        return value fails its check as "non-builtin"."""
        limits = self.limits if timeout is None else replace(self.limits, timeout=timeout)
        items = [c if isinstance(c, Check) else Check(c) for c in checks]
        with _UIDS.take() as uids:
            return _execute(self.mode, program, items, limits, uids if self.mode != "none" else None, objects)

    def run_many(self, jobs: Sequence[tuple], *, timeout: float | None = None) -> list[Result]:
        """Run many (program, checks) or (program, checks, objects) jobs on a pool of `workers` threads,
        each driving one sandbox."""
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
            return list(pool.map(lambda job: self.run(job[0], job[1], timeout=timeout,
                                                      objects=bool(job[2]) if len(job) > 2 else False), jobs))


# --- availability probes -----------------------------------------------------------------------------
_PROBED: dict[str, str | None] = {}
_PROBE_LOCK = threading.Lock()


def available(mode: str) -> str | None:
    """None when `mode` ('bwrap' or 'fallback') works here, else why not (probed once per process)."""
    with _PROBE_LOCK:
        if mode not in _PROBED:
            _PROBED[mode] = _probe(mode)
        return _PROBED[mode]


def missing_prerequisite(mode: str) -> str | None:
    """Why `mode` cannot even be tried here (a missing program, not root), else None."""
    if mode == "bwrap" and shutil.which("bwrap") is None:
        return "bwrap not found on PATH"
    if mode == "fallback":
        if os.geteuid() != 0:
            return "the fallback needs root (it builds namespaces and drops to an unprivileged uid)"
        if shutil.which("unshare") is None:
            return "util-linux 'unshare' not found on PATH"
    return None


def _probe(mode: str) -> str | None:
    why = missing_prerequisite(mode)
    if why is not None:
        return why
    try:
        with _UIDS.take() as uids:
            res = _execute(mode, "x = 6 * 7\ndef f():\n    return x\n", [Check("assert x == 42 == f()")],
                           Limits(timeout=10.0), uids)
    except OSError as e:
        return f"{mode} failed to start: {e}"
    return None if res.status == "ok" else f"{mode} probe failed: {res.verdict}"
