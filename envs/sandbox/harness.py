"""The program that runs inside the sandbox: it splits into the untrusted candidate and the trusted checker.

The host starts ``python -S -s -B -c <BOOTSTRAP> <hex marshal of uids, rlimits, mounts, result fd>``
(nothing in argv, the environment or the sandbox is secret). stdin carries three length-prefixed
marshal frames: this program compiled (wire.py + checker.py + harness.py, compiled once on the host),
the program under test, then the checks with a nonce. The process reads the first two frames only,
mounts the work tmpfs when asked to (bubblewrap as root: size and inode caps), and forks:

- the **candidate** closes every descriptor but its two pipes and stdout/stderr, becomes its own uid,
  runs the program, then serves calls: it receives a function name and arguments as data, calls, and
  answers with the return value as data (exact built-in types only; anything else is answered as
  "non-builtin") or with the exception raised;
- the **checker** (checker.py; the parent) becomes another uid and reads the third frame only after the
  fork, so the candidate never holds the checks, the nonce or the result fd; it writes JSON records to
  the result fd as each check finishes (partial credit survives a later timeout), then says how the
  candidate ended and which tampering it saw.
"""

import marshal
import os
import sys

try:
    from envs.sandbox.checker import CRASH_SIGNALS, Link, _describe, _errno, checker
    from envs.sandbox.wire import NotData, _quote, _read_frame, _short, _write_all, encode, parse, value
except ImportError:  # inside the sandbox wire.py's and checker.py's texts come first
    pass

# What the host runs with -c: read this program, compiled, from stdin and run it.
BOOTSTRAP = """import marshal, os, sys
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]  # never import from the work dir
def _exact(n):
    b = b""
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            raise SystemExit("sandbox: stdin ended early")
        b += c
    return b
exec(marshal.loads(_exact(int.from_bytes(_exact(4), "big"))), {"__name__": "__main__"})
"""


def _mount_tmpfs(mounts):
    """Fresh tmpfs at each (path, bytes, inodes): bwrap caps the size of its own, not the inode count."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for path, size, inodes in mounts:
        opts = f"size={size},nr_inodes={inodes},mode=1777".encode()
        if libc.mount(b"tmpfs", path.encode(), b"tmpfs", 2 | 4, opts) != 0:  # MS_NOSUID | MS_NODEV
            raise SystemExit(f"sandbox: mount {path}: {os.strerror(ctypes.get_errno())}")
    os.chdir(os.getcwd())  # the work dir is now the new tmpfs


def _become(uid, rlimits):
    """Drop root for `uid` (setuid from root clears every capability) and apply the rlimits."""
    import resource  # before dropping root: the interpreter's files may be unreadable afterwards

    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise SystemExit("sandbox: failed to drop root")
    for name, (soft, hard) in rlimits.items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _nondumpable():
    """PR_SET_DUMPABLE 0: a process of the same uid can no longer trace this one or open its fds."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:
        raise SystemExit("sandbox: prctl(PR_SET_DUMPABLE) failed")


# --- the candidate: runs the program, answers calls --------------------------------------------------
def candidate(start, cfg, calls, replies):
    """Runs in the forked child and never returns. Everything here is the program's to break: it can
    only hurt itself, since the checker reads what it sends back as data."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the next stdin frame is the checker's
    lo, hi = sorted((calls, replies))
    os.closerange(3, lo)
    os.closerange(lo + 1, hi)
    os.closerange(hi + 1, 1 << 20)
    _become(cfg["uid"], cfg["rlimits"])
    sys.argv = [""]
    program, objects = start["program"], {}

    def handle(v):  # an opaque reference to one of the program's objects, when the task allows them
        if not start["objects"]:
            return None
        objects[id(v)] = v
        return f'["h",{id(v)},{_quote(type(v).__name__)}]'

    def lookup(x):
        return objects[x[1]]

    def send(*parts):
        _write_all(replies, ("[" + ",".join(parts) + "]\n").encode())

    g = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(program, "<program>", "exec"), g)
    except BaseException as e:
        send('"program"', "false", _quote(_describe(e, program, "program")), _quote(type(e).__name__),
             str(_errno(e)))
        _leave()
    send('"program"', "true", _exports(g))
    inbox = os.fdopen(calls, "rb")
    while True:
        line = inbox.readline()
        if not line:
            _leave()
        msg = parse(line.decode().rstrip("\n"))
        op, cid, before = msg[0], str(msg[1]), []
        try:
            target = g[msg[2]] if type(msg[2]) is str else value(msg[2], 0, lookup)
            if op == "getattr":
                args, kwargs = (), {}
                out = getattr(target, msg[3])
            else:
                args, kwargs = value(msg[3], 0, lookup), value(msg[4], 0, lookup)
                before = [(k, encode(a, handle)) for k, a in [*enumerate(args), *kwargs.items()]
                          if type(a) in (list, dict, set, bytearray)]
                out = target(*args, **kwargs)
        except BaseException as e:
            send('"err"', cid, _quote(type(e).__name__), _quote(_short(e, 300)), str(_errno(e)))
            continue
        try:
            text = encode(out, handle)
            changed = []
            for k, old in before:  # arguments changed in place go back too
                new = encode(args[k] if type(k) is int else kwargs[k], handle)
                if new != old:
                    changed.append("[" + encode(k) + "," + new + "]")
        except (NotData, RecursionError) as e:
            send('"obj"', cid, _quote(_short(e, 100)))
            continue
        send('"ok"', cid, text, "[" + ",".join(changed) + "]")


def _exports(g):
    """What the checker may see of the program's globals: functions (called through proxies), plain
    values (copied), stdlib modules (imported again by name), and other objects only by type name."""
    items = []
    for name, v in list(g.items()):
        if type(name) is not str or name.startswith("__"):
            continue
        if type(v) is type(sys):
            items.append('["m",{},{}]'.format(_quote(name), _quote(str(getattr(v, "__name__", "")))))
        elif callable(v):
            items.append(f'["f",{_quote(name)}]')
        else:
            try:
                items.append(f'["v",{_quote(name)},{encode(v)}]')
            except (NotData, RecursionError):
                items.append(f'["o",{_quote(name)},{_quote(type(v).__name__)}]')
    return "[" + ",".join(items) + "]"


def _leave():
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


def main():
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    sys.set_int_max_str_digits(0)
    start = _read_frame(0)
    if cfg.get("mounts"):
        _mount_tmpfs(cfg["mounts"])
    if cfg["checker_uid"] is None:  # one uid for both: neither may trace the other (inherited by fork)
        _nondumpable()
    calls_r, calls_w = os.pipe()
    replies_r, replies_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(calls_w)
            os.close(replies_r)
            candidate(start, cfg, calls_r, replies_w)
        except BaseException:
            import traceback

            traceback.print_exc()  # a harness failure, shown on the run's stderr
        finally:
            os._exit(70)
    os.close(calls_r)
    os.close(replies_w)
    del start
    _become(cfg["checker_uid"], cfg["rlimits"])
    req = _read_frame(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    fd, nonce = cfg["result_fd"], req["nonce"]

    def report(**rec):
        rec["nonce"] = nonce
        _write_all(fd, ("{" + ",".join(_quote(k) + ":" + (("true" if v else "false") if type(v) is bool else
                                                         str(v) if type(v) is int else _quote(str(v)))
                                       for k, v in rec.items()) + "}\n").encode())

    report(kind="start")
    link = Link(pid, calls_w, replies_r, req["objects"], report)
    needed = checker(link, req["checks"], report)
    if link.close() and needed and link.gone is not None:  # the candidate ended before the checker was done
        report(kind="gone", **link.gone)
        if link.gone.get("signal") not in CRASH_SIGNALS:
            link.flag("exit")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    report(kind="done")
    os._exit(0)


if __name__ == "__main__":
    main()
