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
import time
import uuid
from pathlib import Path

import pytest

from envs.sandbox import Limits, Sandbox
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
    prog = f"""import os
print(dict(os.environ))
for path in ('/root', {str(home)!r}, '/home', '/work', {str(REPO)!r}):
    try:
        print(path, os.listdir(path))
    except OSError as e:
        print(path, type(e).__name__)
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            print(pid, open('/proc/%s/environ' % pid, 'rb').read())
        except OSError as e:
            print(pid, type(e).__name__)
"""
    res = box.run(prog)
    assert res.status == "ok", res.verdict
    assert secret not in res.stdout and "SELFIMPROVE_TEST_SECRET" not in res.stdout
    for path in ("/root", str(home), "/home", "/work", str(REPO)):
        assert f"{path} FileNotFoundError" in res.stdout or f"{path} PermissionError" in res.stdout, res.stdout
    # What /root holds on the host is not visible inside.
    for name in os.listdir("/root"):
        assert repr(name) not in res.stdout


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
    prog = """import socket
print('IFACES', sorted(name for _, name in socket.if_nameindex()))
print('ROUTES', [l for l in open('/proc/net/route').read().splitlines()[1:] if l.strip()])
try:
    print('ROUTES6', sorted({l.split()[-1] for l in open('/proc/net/ipv6_route').read().splitlines() if l.strip()}))
except OSError:
    print('ROUTES6', [])
print('DEV', [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]])
"""
    res = box.run(prog)
    assert res.status == "ok", res.verdict
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    assert lines["IFACES"] == "['lo']" and lines["DEV"] == "['lo']"
    # No IPv4 route at all; IPv6 routes (the kernel's reject routes) only ever name the loopback device.
    assert lines["ROUTES"] == "[]" and lines["ROUTES6"] in ("[]", "['lo']")


def test_killing_its_parent_does_not_touch_the_host(box):
    prog = ("import os, signal\nprint('parent', os.getppid(), flush=True)\nfor target in (os.getppid(), 0, -1):\n    try:\n"
            "        os.kill(target, signal.SIGKILL)\n    except OSError as e:\n        print(target, type(e).__name__, flush=True)\n")
    res = box.run(prog, ["assert True"])
    assert res.status in ("ok", "killed"), res.verdict
    assert "parent 1" in res.stdout or "parent 0" in res.stdout  # its parent is the sandbox's own init
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
    assert "before the checks finished" in res.verdict
    res = box.run("def f():\n    return 1\n", ["assert f() == 1", "import os; os._exit(3)", "assert True"])
    assert res.status == "crashed" and (res.passed, res.total) == (1, 3) and res.exit_code == 3


def test_segfault_through_ctypes(box):
    res = box.run("import ctypes\nctypes.string_at(0)\n", ["assert True"])
    assert res.status == "crashed" and res.signal == 11 and "SIGSEGV" in res.verdict


def test_ignoring_signals_does_not_survive_the_timeout(box):
    prog = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU,"
            " signal.SIGALRM):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)\n")
    t0 = time.monotonic()
    res = box.run(prog, timeout=1.0)
    assert res.status == "timeout" and time.monotonic() - t0 < 3.5
