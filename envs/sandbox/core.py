"""Run untrusted Python in a sandbox: bubblewrap when present, an unshare+chroot fallback, never bare by default.

Every run gets fresh namespaces (pid, net, mount, ipc, uts), a root holding only read-only system
directories and the Python prefix, size-limited tmpfs at /tmp and /mnt/work (the work dir), a clean
environment, and rlimits (CPU, address space, file size, open files, processes, no core dumps). The
payload runs as an unprivileged uid of its own (one per concurrent run), so RLIMIT_NPROC holds even when
the caller is root, and it can neither see nor signal host processes. The host side enforces the wall
clock (SIGKILL to the whole process group; the pid namespace takes every descendant with it) and caps the
output it keeps. See ``Sandbox`` for the modes and what each protects.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import marshal
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from envs.errors import UserError

Mode = Literal["auto", "bwrap", "fallback", "none"]
Status = Literal["ok", "failed", "timeout", "crashed", "killed", "limit"]
UNSAFE_ENV = "SELFIMPROVE_UNSAFE_NO_SANDBOX"
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGSYS}
LIMIT_SIGNALS = {signal.SIGXCPU, signal.SIGXFSZ}
LIMIT_ERRNOS = {errno.EFBIG, errno.ENOSPC, errno.EMFILE}  # file size, disk and open-file limits
_HERE = Path(__file__).parent
SANDBOX_PYTHON = "/mnt/python"
WORK = "/mnt/work"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Output beyond `output_bytes` per stream is dropped; a run that writes
    more than `max_output_bytes` in all is killed with status 'limit'."""

    timeout: float = 5.0
    cpu_seconds: int | None = None  # default: the wall timeout rounded up, plus one
    memory_mb: int = 1024  # RLIMIT_AS
    file_size_mb: int = 16  # RLIMIT_FSIZE
    disk_mb: int = 64  # each of the /tmp and work-dir tmpfs
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


@dataclass(frozen=True)
class Check:
    """One unit of a test suite: code run after the program in its namespace; passes if it raises nothing.
    Uncounted checks are setup (imports, helpers): they run in order but do not count toward the score."""

    code: str
    counted: bool = True


@dataclass
class Result:
    """What one sandboxed run did. `verdict` is the harness's first failure (or the reason it stopped)."""

    status: Status
    passed: int
    total: int
    verdict: str
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration: float = 0.0
    mode: str = ""
    checks: list[bool] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """Fraction of counted checks passed; 1.0 only when the run finished and every check passed."""
        if self.status == "ok":
            return 1.0
        return self.passed / self.total if self.total else 0.0


# --- unprivileged uids: one per concurrent run, so RLIMIT_NPROC counts per run ------------------------
class _UidPool:
    def __init__(self, size: int = 256):
        base = 1_900_000_000 + (os.getpid() % 50_000) * size  # distinct ranges for concurrent processes
        self.range = range(base, base + size)
        self._free = list(reversed(self.range))
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def take(self):
        with self._cond:
            while not self._free:
                self._cond.wait()
            uid = self._free.pop()
        try:
            yield uid
        finally:
            with self._cond:
                self._free.append(uid)
                self._cond.notify()


_UIDS = _UidPool()


# --- interpreter and command lines -------------------------------------------------------------------
@functools.cache
def _python() -> tuple[str, str | None, str]:
    """(host interpreter, prefix to bind at /mnt/python or None when /usr has it, path inside the sandbox)."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    if prefix == "/usr" or prefix.startswith("/usr/"):
        return exe, None, exe
    if not exe.startswith(prefix + "/"):
        exe = os.path.join(prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")
    return exe, prefix, SANDBOX_PYTHON + exe[len(prefix):]


def _child_env(python_bound: bool) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": WORK, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
    if python_bound:
        env["LD_LIBRARY_PATH"] = SANDBOX_PYTHON + "/lib"
    return env


@functools.cache
def _source(name: str) -> str:
    return (_HERE / name).read_text()


def _bwrap_argv(limits: Limits, inner: list[str], env: dict[str, str], prefix: str | None) -> list[str]:
    size = str(limits.disk_mb * 1024 * 1024)
    argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
    if os.geteuid() == 0:  # root caller: no user namespace; the harness setuid()s to the run's own uid
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:  # unprivileged caller: a user namespace (per-run RLIMIT_NPROC accounting), no nested ones
        argv += ["--unshare-user", "--disable-userns"]
    for k, v in env.items():
        argv += ["--setenv", k, v]
    argv += ["--ro-bind", "/usr", "/usr", "--perms", "0755", "--dir", "/mnt"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + name
        if os.path.islink(host):
            argv += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            argv += ["--ro-bind", host, host]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--dev", "/dev", "--proc", "/proc"]
    if prefix:
        argv += ["--ro-bind", prefix, SANDBOX_PYTHON]
    argv += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp",
             "--perms", "1777", "--size", size, "--tmpfs", WORK,
             "--remount-ro", "/", "--chdir", WORK, "--", *inner]
    return argv


def _fallback_argv(limits: Limits, inner: list[str], env: dict[str, str], prefix: str | None) -> list[str]:
    host_python = _python()[0]
    cfg = {"argv": inner, "env": env, "python_prefix": prefix, "disk_kb": limits.disk_mb * 1024}
    return ["unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--",
            host_python, "-S", "-s", "-B", "-c", _source("launcher.py"), marshal.dumps(cfg).hex()]


# --- one run -----------------------------------------------------------------------------------------
class _Streams:
    """Drain the child's pipes with caps, feed its stdin, and stop at the deadline or the output limit."""

    def __init__(self, proc: subprocess.Popen, result_r: int, payload: bytes, limits: Limits):
        self.proc, self.limits = proc, limits
        self.sel = selectors.DefaultSelector()
        self.bufs = {"stdout": bytearray(), "stderr": bytearray(), "result": bytearray()}
        self.truncated = {"stdout": False, "stderr": False, "result": False}
        self.total_output = 0
        self.payload = memoryview(payload)
        os.set_blocking(proc.stdin.fileno(), False)
        self.sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
        self.sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        self.sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        self.result_file = os.fdopen(result_r, "rb", buffering=0)
        self.sel.register(self.result_file, selectors.EVENT_READ, "result")

    def pump(self, deadline: float) -> str | None:
        """Returns None when every pipe closed, 'timeout' at the deadline, 'output' past the output limit."""
        while self.sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            for key, _ in self.sel.select(timeout=min(left, 0.5)):
                if key.data == "stdin":
                    self._write(key.fileobj)
                elif self._read(key.fileobj, key.data):
                    return "output"
        return None

    def drain(self, grace: float) -> None:
        """After a kill: read (and drop) until every pipe closes, i.e. every sandboxed process is gone."""
        deadline = time.monotonic() + grace
        with contextlib.suppress(OSError):
            while self.sel.get_map() and time.monotonic() < deadline:
                for key, _ in self.sel.select(timeout=0.05):
                    if key.data == "stdin" or not os.read(key.fileobj.fileno(), 65536):
                        self.sel.unregister(key.fileobj)

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fileobj)
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr, self.result_file):
            with contextlib.suppress(OSError):
                f.close()

    def _write(self, f) -> None:
        try:
            n = os.write(f.fileno(), self.payload[:65536])
        except (BrokenPipeError, OSError):
            n = len(self.payload)
        self.payload = self.payload[n:]
        if not self.payload:
            self.sel.unregister(f)
            f.close()

    def _read(self, f, name: str) -> bool:
        chunk = os.read(f.fileno(), 65536)
        if not chunk:
            self.sel.unregister(f)
            return False
        cap = self.limits.output_bytes if name != "result" else self.limits.max_output_bytes
        buf = self.bufs[name]
        room = cap - len(buf)
        if room > 0:
            buf += chunk[:room]
        if len(chunk) > max(room, 0):
            self.truncated[name] = True
        self.total_output += len(chunk)
        return self.total_output > self.limits.max_output_bytes


def _parse_results(raw: bytes, nonce: str) -> list[dict]:
    out = []
    for line in raw.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("nonce") == nonce:
            out.append(rec)
    return out


def _decode(buf: bytearray) -> str:
    return bytes(buf).decode("utf-8", errors="replace")


class Sandbox:
    """Runs untrusted Python programs with tests, one sandbox per run, many runs concurrently.

    Modes:
    - ``bwrap`` (bubblewrap): new pid/net/ipc/uts/mount namespaces, a root of read-only binds (/usr, the
      Python prefix), tmpfs /tmp and work dir, a clean environment; as root no user namespace and the
      harness drops to the run's uid; as a normal user a user namespace with nested ones disabled.
    - ``fallback`` (no bubblewrap; needs root and util-linux ``unshare``): the same namespaces from
      ``unshare``, a chroot (not pivot_root) into a tmpfs root built by ``launcher.py`` with the same
      read-only nosuid binds, no-new-privs, the same uid drop and rlimits. What keeps the payload in is
      the chroot plus the unprivileged uid (which cannot chroot back out); it relies on our ~80 lines of
      mount code instead of bwrap's long-reviewed setup, and a non-root caller gets no fallback at all.
    - ``none``: a plain subprocess with rlimits, a clean environment and a temporary cwd, but NO
      filesystem, network or process isolation (and as root RLIMIT_NPROC does not hold). Refused unless
      ``i_understand_this_is_unsafe=True`` or the environment variable SELFIMPROVE_UNSAFE_NO_SANDBOX=1.
    - ``auto``: bwrap if it works here, else the fallback if it works, else a UserError.

    Neither mode filters system calls (no seccomp) or caps memory bandwidth; RLIMIT_AS bounds memory per
    process, RLIMIT_NPROC the process count, so a run's memory is at most about processes × memory_mb.
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
            mode = "bwrap" if available("bwrap") is None else "fallback" if available("fallback") is None else ""
            if not mode:
                raise UserError("no sandbox works on this machine: install bubblewrap (apt-get install "
                                f"bubblewrap) [{available('bwrap')}] or run as root with util-linux "
                                f"'unshare' [{available('fallback')}]")
        elif mode in ("bwrap", "fallback"):
            why = available(mode)
            if why is not None:
                raise UserError(f"sandbox mode '{mode}' is not available here: {why}")
        else:
            raise UserError(f"unknown sandbox mode '{mode}'; use auto, bwrap, fallback or none")
        self.mode: str = mode

    # -- public API --------------------------------------------------------------------------------
    def run(self, program: str, checks: Sequence[str | Check] = (), *, timeout: float | None = None) -> Result:
        """Run `program`, then each check in its namespace; `timeout` overrides the wall-clock limit."""
        limits = self.limits if timeout is None else replace(self.limits, timeout=timeout)
        items = [c if isinstance(c, Check) else Check(c) for c in checks]
        with _UIDS.take() as uid:
            return self._run(program, items, limits, uid)

    def run_many(self, jobs: Sequence[tuple[str, Sequence[str | Check]]], *,
                 timeout: float | None = None) -> list[Result]:
        """Run many (program, checks) jobs on a pool of `workers` threads, each driving one sandbox."""
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
            return list(pool.map(lambda job: self.run(job[0], job[1], timeout=timeout), jobs))

    # -- internals ---------------------------------------------------------------------------------
    def _run(self, program: str, checks: list[Check], limits: Limits, uid: int) -> Result:
        host_python, prefix, inner_python = _python()
        nonce = secrets.token_hex(16)
        result_r, result_w = os.pipe()
        cfg = {"uid": uid, "gid": uid, "rlimits": limits.rlimits(), "result_fd": result_w, "nonce": nonce}
        workdir = None
        kwargs: dict = {}
        if self.mode == "bwrap":
            inner = [inner_python, "-S", "-s", "-B", "-c", _source("harness.py"), marshal.dumps(cfg).hex()]
            argv = _bwrap_argv(limits, inner, _child_env(prefix is not None), prefix)
        elif self.mode == "fallback":
            inner = [inner_python, "-S", "-s", "-B", "-c", _source("harness.py"), marshal.dumps(cfg).hex()]
            argv = _fallback_argv(limits, inner, _child_env(prefix is not None), prefix)
        else:  # none: same harness, no isolation
            workdir = tempfile.mkdtemp(prefix="selfimprove-unsafe-")
            cfg["uid"] = None  # the host interpreter may live where an unprivileged uid cannot read it
            argv = [host_python, "-S", "-s", "-B", "-c", _source("harness.py"), marshal.dumps(cfg).hex()]
            kwargs = {"cwd": workdir, "env": {**_child_env(False), "HOME": workdir, "TMPDIR": workdir}}
        kwargs.setdefault("env", {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
        payload = marshal.dumps({"program": program, "checks": [(c.code, c.counted) for c in checks]})
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(result_w,), start_new_session=True, **kwargs)
        except BaseException:
            os.close(result_r)
            os.close(result_w)
            raise
        os.close(result_w)
        streams = _Streams(proc, result_r, payload, limits)
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
        duration = time.monotonic() - start
        return self._result(checks, _parse_results(bytes(streams.bufs["result"]), nonce), stop, rc, streams,
                            duration)

    def _result(self, checks: list[Check], recs: list[dict], stop: str | None, rc: int, streams: _Streams,
                duration: float) -> Result:
        counted = [i for i, c in enumerate(checks) if c.counted]
        ok_by_index = {r["i"]: bool(r.get("ok")) for r in recs if r.get("kind") == "check"}
        passed = sum(1 for i in counted if ok_by_index.get(i))
        failures = [r for r in recs if r.get("kind") in ("program", "check") and not r.get("ok")]
        done = any(r.get("kind") == "done" for r in recs)
        started = any(r.get("kind") == "start" for r in recs)
        sig = -rc if rc < 0 else (rc - 128 if rc > 128 and not done and self.mode != "none" else None)
        exit_code = None if sig is not None else rc  # a signal death has no exit code
        if stop == "timeout":
            status, why = "timeout", f"timed out after {streams.limits.timeout:g} s"
        elif stop == "output":
            status, why = "limit", f"output limit exceeded ({streams.limits.max_output_bytes} bytes)"
        elif done:
            hit = any(r.get("error") == "MemoryError" or r.get("errno") in LIMIT_ERRNOS for r in failures)
            status = "ok" if not failures and passed == len(counted) else ("limit" if hit else "failed")
            why = "all checks passed" if status == "ok" else ""
        elif sig in LIMIT_SIGNALS:
            status, why = "limit", f"killed by {signal.Signals(sig).name} (resource limit)"
        elif sig is not None and sig in CRASH_SIGNALS:
            status, why = "crashed", f"crashed with {signal.Signals(sig).name}"
        elif sig is not None:
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            status, why = "killed", f"killed by {name}"
        elif not started:
            status, why = "crashed", f"sandbox failed to start (exit {rc}): {_decode(streams.bufs['stderr'])[-300:]}"
        else:
            status, why = "crashed", f"exited with code {rc} before the checks finished"
        verdict = failures[0]["verdict"] if failures else why
        if failures and status in ("timeout", "limit", "crashed", "killed") and why:
            verdict = f"{why}; first failure: {verdict}"
        return Result(status=status, passed=passed, total=len(counted), verdict=verdict, exit_code=exit_code,
                      signal=sig, stdout=_decode(streams.bufs["stdout"]), stderr=_decode(streams.bufs["stderr"]),
                      stdout_truncated=streams.truncated["stdout"], stderr_truncated=streams.truncated["stderr"],
                      duration=duration, mode=self.mode, checks=[bool(ok_by_index.get(i)) for i in counted])


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
    box = object.__new__(Sandbox)
    box.limits, box.workers, box.mode = Limits(timeout=10.0), 1, mode
    try:
        res = box.run("x = 6 * 7", ["assert x == 42"])
    except OSError as e:
        return f"{mode} failed to start: {e}"
    return None if res.status == "ok" else f"{mode} probe failed: {res.verdict}"
