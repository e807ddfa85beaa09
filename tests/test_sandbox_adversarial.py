"""Hostile programs: each must end cleanly (a status, never an exception here) and leave the host unaffected.

"Unaffected" is checked after every run: no process of a sandbox uid survives, the test process can still
start subprocesses, and whatever the program aimed at (files, listeners, environment) is untouched. Runs in
both modes (bwrap and the forced fallback); short timeouts keep the suite fast. No test sends traffic off
this machine: the network checks only look at interfaces and routes from inside, and at a listener the
test opens on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from envs.sandbox import Check, Limits, Sandbox
from envs.sandbox.core import _UIDS

REPO = Path(__file__).resolve().parent.parent


def _sandbox_processes() -> list[int]:
    """Live processes owned by a uid this test process's sandboxes run as."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid in _UIDS.range:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def assert_host_unaffected() -> None:
    deadline = time.monotonic() + 5.0
    while (left := _sandbox_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"sandbox processes survived the run: {left}"
    assert subprocess.run(["true"], check=False).returncode == 0


@pytest.fixture
def box(sandbox_mode):
    # Runs expected to finish get a generous limit (the CI machine may be busy); hostile ones pass 1-1.5 s.
    yield Sandbox(sandbox_mode, Limits(timeout=10.0, processes=16, memory_mb=512), workers=2)
    assert_host_unaffected()


def test_infinite_loop_times_out(box):
    t0 = time.monotonic()
    res = box.run("while True:\n    pass\n", ["assert True"], timeout=1.5)
    assert res.status == "timeout" and res.fraction == 0.0
    assert time.monotonic() - t0 < 1.5 + 2.5


def test_long_sleep_times_out(box):
    res = box.run("import time\ntime.sleep(3600)\n", timeout=1.0)
    assert res.status == "timeout" and res.duration < 3.5


def test_fork_bomb_is_contained(box):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = box.run(bomb, timeout=1.0)
    assert res.status == "timeout"
    # The process limit holds even though this test runs as root: count how many forks succeed.
    counter = ("import os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n"
               "        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\n"
               "print(n)\n")
    res = box.run(counter, timeout=5.0)
    assert res.status == "ok", res.verdict
    assert 0 < int(res.stdout) < box.limits.processes


def test_huge_allocation_fails_cleanly(box):
    res = box.run("x = bytearray(4 * 1024 ** 3)\n", ["assert len(x) > 0"])
    assert res.status == "limit" and res.verdict.startswith("program raised MemoryError")


def test_big_files_and_full_disks_stop_cleanly(box):
    res = box.run("open('big', 'wb').write(b'x' * (64 << 20))\n")  # over RLIMIT_FSIZE (16 MiB)
    assert res.status == "limit" and "File too large" in res.verdict  # Python ignores SIGXFSZ: EFBIG
    fill = ("import os\nfor i in range(200):\n    with open('f%d' % i, 'wb') as f:\n"
            "        f.write(b'x' * (8 << 20))\n")
    res = Sandbox(box.mode, Limits(timeout=10.0, disk_mb=32)).run(fill)  # the work dir's tmpfs fills up
    assert res.status == "limit" and "OSError" in res.verdict and "No space left" in res.verdict
    res = box.run("fs = [open('/dev/null') for _ in range(1000)]\n")  # RLIMIT_NOFILE
    assert res.status == "limit" and "Too many open files" in res.verdict


def test_writes_outside_the_work_dir_never_reach_the_host(box):
    tag = uuid.uuid4().hex
    targets = [REPO / f"pwned-{tag}", REPO / "tests" / f"pwned-{tag}", Path("/tmp") / f"pwned-{tag}",
               Path("/var/tmp") / f"pwned-{tag}", Path("/dev/shm") / f"pwned-{tag}", Path.home() / f"pwned-{tag}"]
    prog = "import os\nresults = {}\n"
    for t in targets:
        prog += (f"try:\n    open({str(t)!r}, 'w').write('x')\n    results[{str(t)!r}] = 'written'\n"
                 f"except OSError as e:\n    results[{str(t)!r}] = type(e).__name__\n")
    prog += "open('inside.txt', 'w').write('fine')\nprint(results)\n"
    res = box.run(prog)
    assert res.status == "ok", res.verdict
    for t in targets:
        assert not t.exists(), f"{t} appeared on the host"
    # The repository path does not even exist inside.
    assert f"{str(REPO / f'pwned-{tag}')!r}: 'FileNotFoundError'" in res.stdout


def test_cannot_read_root_home_or_host_secrets(box, monkeypatch):
    secret = "s3cr3t-" + uuid.uuid4().hex
    monkeypatch.setenv("SELFIMPROVE_TEST_SECRET", secret)
    home = Path.home()
    prog = f"""import os, sys
print(dict(os.environ), sys.argv)
for path in ('/root', {str(home)!r}, '/home', '/work', {str(REPO)!r}, '/proc', '/sys'):
    try:
        print(path, os.listdir(path))
    except OSError as e:
        print(path, type(e).__name__)
"""
    res = box.run(prog)
    assert res.status == "ok", res.verdict
    assert secret not in res.stdout and "SELFIMPROVE_TEST_SECRET" not in res.stdout
    for path in ("/root", str(home), "/home", "/work", str(REPO), "/proc", "/sys"):
        assert f"{path} FileNotFoundError" in res.stdout or f"{path} PermissionError" in res.stdout, res.stdout
    # What /root holds on the host is not visible inside.
    for name in os.listdir("/root"):
        assert repr(name) not in res.stdout


def test_host_paths_do_not_show_through_mountinfo(box):
    """No /proc at all: neither /proc/self/mountinfo (whose bind sources name host paths) nor any other
    process's cmdline, environ or fds can be read."""
    prefix = os.path.realpath(sys.base_prefix)
    prog = """import os
for path in ('/proc/self/mountinfo', '/proc/self/mounts', '/proc/1/cmdline', '/proc/self/fd', '/etc/mtab'):
    try:
        print(path, open(path).read()[:2000])
    except OSError as e:
        print(path, type(e).__name__)
"""
    res = box.run(prog)
    assert res.status == "ok", res.verdict
    assert "/proc/self/mountinfo FileNotFoundError" in res.stdout and "/proc/1/cmdline FileNotFoundError" in res.stdout
    assert prefix not in res.stdout and str(REPO) not in res.stdout


def test_cannot_connect_to_a_host_listener(box):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        prog = (f"import socket\ns = socket.socket()\ns.settimeout(0.5)\ntry:\n"
                f"    s.connect(('127.0.0.1', {port}))\n    print('CONNECTED')\nexcept OSError as e:\n"
                f"    print('refused', type(e).__name__)\n")
        res = box.run(prog)
        assert res.status == "ok", res.verdict
        assert "CONNECTED" not in res.stdout and res.stdout.startswith("refused")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_has_no_route_off_the_machine(box):
    # A UDP connect() only looks up a route (nothing is sent): with no interface but lo, there is none.
    prog = """import socket
print('IFACES', sorted(name for _, name in socket.if_nameindex()))
for addr in ('192.0.2.1', '10.0.0.1'):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((addr, 9))
        print('ROUTE', addr)
    except OSError as e:
        print('NOROUTE', addr, e.errno)
"""
    res = box.run(prog)
    assert res.status == "ok", res.verdict
    assert "IFACES ['lo']" in res.stdout and "ROUTE " not in res.stdout.replace("NOROUTE ", "")
    assert res.stdout.count("NOROUTE") == 2


def test_killing_its_parent_does_not_touch_the_host(box):
    prog = ("import os, signal\nprint('parent', os.getppid(), flush=True)\nfor target in (os.getppid(), 0, -1):\n    try:\n"
            "        os.kill(target, signal.SIGKILL)\n    except OSError as e:\n        print(target, type(e).__name__, flush=True)\n")
    res = box.run(prog, ["assert True"])
    assert res.status in ("ok", "killed"), res.verdict
    # Its parent is the sandbox's checker (a pid of the sandbox's own namespace), which it may not signal.
    parent = int(res.stdout.split()[1])
    assert 0 < parent < 10 and f"{parent} PermissionError" in res.stdout, res.stdout
    assert box.run("x = 1", ["assert x == 1"]).status == "ok"  # the sandbox and its pool still work


def test_gigabytes_of_stdout_are_cut_off(box):
    t0 = time.monotonic()
    res = box.run("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(4096):\n    sys.stdout.write(chunk)\n",
                  timeout=5.0)
    assert res.status == "limit" and "output limit" in res.verdict
    assert res.stdout_truncated and len(res.stdout) == box.limits.output_bytes
    assert time.monotonic() - t0 < 5.0


def test_deep_recursion(box):
    res = box.run("def f(n):\n    return f(n + 1)\n", ["f(0)"])
    assert res.status == "failed" and res.verdict.startswith("test 0 raised RecursionError")
    res = box.run("import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)\n",
                  timeout=1.5)
    assert res.status in ("crashed", "failed", "limit", "timeout") and res.fraction == 0.0


def test_os_exit_before_the_checks_finish(box):
    res = box.run("import os\nos._exit(0)\n", ["assert True"])
    assert res.status == "crashed" and res.passed == 0 and res.exit_code == 0
    assert "before the checks finished" in res.verdict and res.tampering == ["exit"]
    # The program leaves in the middle of the checks: that check and every later call fail.
    prog = "import os\ndef f():\n    return 1\ndef g():\n    os._exit(3)\n"
    res = box.run(prog, ["assert f() == 1", "g()", "assert f() == 1", "assert True"])
    assert res.status == "crashed" and (res.passed, res.total) == (2, 4) and res.exit_code == 3
    assert res.checks == [True, False, False, True] and res.tampering == ["exit"]
    assert res.verdict.startswith("exited with code 3 before the checks finished; first failure: test 1 failed: g()")
    # A check that kills the checker itself (trusted code, so only a broken test does this) is a crash.
    res = box.run("def f():\n    return 1\n", ["assert f() == 1", "import os; os._exit(5)", "assert True"])
    assert res.status == "crashed" and (res.passed, res.total) == (1, 3) and res.exit_code == 5


def test_segfault_through_ctypes(box):
    res = box.run("import ctypes\nctypes.string_at(0)\n", ["assert True"])
    assert res.status == "crashed" and res.signal == 11 and "SIGSEGV" in res.verdict


def test_ignoring_signals_does_not_survive_the_timeout(box):
    prog = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU,"
            " signal.SIGALRM):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)\n")
    t0 = time.monotonic()
    res = box.run(prog, timeout=1.0)
    assert res.status == "timeout" and time.monotonic() - t0 < 3.5


# --- hardening: keyring, nested user namespaces, inodes ------------------------------------------------
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def test_the_kernel_keyring_carries_nothing_between_runs(box):
    """Pool uids are reused and keys outlive a run: add_key, request_key and keyctl are refused."""
    nr = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}.get(os.uname().machine)
    if nr is None:
        pytest.skip("no syscall table for this architecture")
    add, req, ctl = nr
    tag = uuid.uuid4().hex
    write = (LIBC + f"r = libc.syscall({add}, b'user', b'{tag}', b'secret', 6, -4)\n"  # KEY_SPEC_USER_KEYRING
             "print('add', r, ctypes.get_errno())\n"
             f"print('session', libc.syscall({ctl}, 1, -3, 0), ctypes.get_errno())\n")  # JOIN_SESSION_KEYRING
    read = LIBC + (f"print('find', libc.syscall({req}, b'user', b'{tag}', None, 0), ctypes.get_errno())\n"
                   f"print('list', libc.syscall({ctl}, 6, -4, 0, 0), ctypes.get_errno())\n")  # KEYCTL_READ
    for _ in range(2):
        res = box.run(write)
        assert res.status == "ok" and "add -1 1\n" in res.stdout and "session -1 1" in res.stdout, res.stdout
        res = box.run(read)
        assert res.status == "ok" and "find -1 1\n" in res.stdout and "list -1 1" in res.stdout, res.stdout


def test_no_nested_user_namespace(box):
    """unshare(CLONE_NEWUSER) (all capabilities inside) and clone3 are refused; fork and threads work."""
    prog = LIBC + ("print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
                   "print('unshare-ns', libc.unshare(0x00020000), ctypes.get_errno())\n"  # CLONE_NEWNS: no caps
                   "import subprocess, threading\n"
                   "r = subprocess.run(['unshare', '--user', '--map-root-user', 'id', '-u'], capture_output=True)\n"
                   "print('cli', r.returncode, r.stdout)\n"
                   "t = threading.Thread(target=print, args=('thread ok',))\nt.start()\nt.join()\n"
                   "pid = os.fork()\nif pid == 0:\n    os._exit(7)\nprint('fork', os.waitpid(pid, 0)[1] >> 8)\n")
    res = box.run(prog)
    assert res.status == "ok", res.verdict
    assert "unshare -1 1\n" in res.stdout and "unshare-ns -1 1\n" in res.stdout, res.stdout
    assert "cli 0" not in res.stdout and "thread ok" in res.stdout and "fork 7" in res.stdout, res.stdout


def test_the_work_dirs_cap_inodes(box):
    """200,000 empty files used to fit in 3 s (kernel memory no size cap counts): now each tmpfs holds
    at most Limits.inodes."""
    prog = ("import os\nn = 0\nfor d in ('.', '/tmp'):\n    try:\n        for i in range(200_000):\n"
            "            open('%s/f%d' % (d, i), 'w').close()\n            n += 1\n    except OSError as e:\n"
            "        print(d, n, e.errno)\n")
    res = box.run(prog, timeout=10.0)
    assert res.status == "ok", res.verdict
    counts = [int(line.split()[1]) for line in res.stdout.splitlines()]
    assert len(counts) == 2 and counts[0] < box.limits.inodes and counts[1] < 2 * box.limits.inodes, res.stdout
    assert all(line.endswith(" 28") for line in res.stdout.splitlines())  # ENOSPC


# --- the result channel: what already held ----------------------------------------------------------
def test_records_without_the_nonce_or_after_garbage_are_handled():
    from envs.sandbox.verdicts import parse_records

    good = b'{"kind":"check","i":0,"ok":false,"nonce":"n1"}\n'
    raw = b"\x00garbage{not json\n" + b'{"kind":"check","i":0,"ok":true,"nonce":"guess"}\n' + good
    assert parse_records(raw, "n1") == [{"kind": "check", "i": 0, "ok": False, "nonce": "n1"}]


def test_a_checker_that_loses_its_result_fd_reads_as_a_crash(box):
    closer = Check("import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n    except OSError:\n"
                   "        pass\n", counted=False)
    res = box.run("def f():\n    return 1\n", ["assert f() == 1", closer, "assert f() == 1"])
    assert res.status == "crashed" and res.fraction < 1.0 and res.passed <= 1, res.verdict
