"""The sandbox's trusted half: runs the checks against proxies of the program's functions.

The checker is the parent of the candidate and runs as another uid (or, with only one uid, non-dumpable),
so the program can neither trace it, open its descriptors nor signal it. Each function the program
defines is a proxy here: calling it sends the arguments over a pipe and returns the answer decoded by
`wire.value`, so the checks compare plain built-in values with the checker's own `==`, `assert` and
`exec`. An answer that is not data (a non-builtin value), anything else written on the channel, and an
exit while the checks still need the program fail the check and are flagged as tampering. Stdlib only:
sent into the sandbox with wire.py and harness.py as one compiled program. Over 400 lines on purpose:
the trusted half is one self-contained module (it cannot import the package inside the sandbox).
"""

import os
import sys

try:  # noqa: SIM105  (contextlib would cost an import inside the sandbox)
    from envs.sandbox.wire import (
        BadData,
        NotData,
        _quote,
        _short,
        _write_all,
        encode,
        parse,
        value,
    )
except ImportError:  # inside the sandbox wire.py's text comes first, so its names are already here
    pass

MAX_LINE = 32 << 20  # bytes of one answer (a return value); more is "too large to check"
WAIT_EXIT = 1.0  # seconds the checker waits for the candidate to exit once the checks are done
CRASH_SIGNALS = (4, 6, 7, 8, 11, 31, 24, 25)  # ILL ABRT BUS FPE SEGV SYS, and the limits XCPU XFSZ: not exits


# --- verdict text ------------------------------------------------------------------------------------
def _describe(exc, source, label):
    """'test 2 failed: assert f(1) == 3 (got 2)' or 'program raised ZeroDivisionError: ... (line 4)'."""
    try:
        msg = str(exc)
    except BaseException:
        msg = "<unprintable>"
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<" + label + ">":
            line = tb.tb_lineno
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        line = exc.lineno
        msg = exc.msg
    where = ""
    src = None
    if line is not None:
        lines = source.splitlines()
        if 0 < line <= len(lines):
            src = lines[line - 1].strip()
        where = f" (line {line}: {_short(src, 120)})" if src else f" (line {line})"
    if isinstance(exc, (AssertionError, Refused)):
        text = label + " failed: " + _short(src or "assert", 200)
        if msg:
            text += " -- " + _short(msg, 160)
        return text
    detail = ": " + _short(msg, 160) if msg else ""
    return f"{label} raised {type(exc).__name__}{detail}{where}"


def _got(code, g):
    """For a failing `assert X == Y`, the value X actually had (evaluated once more), else ''."""
    try:
        import ast

        tree = ast.parse(code)
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
            test = tree.body[0].test
            if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
                left = compile(ast.Expression(test.left), "<got>", "eval")
                return f" (got {_short(repr(eval(left, g)), 120)})"
    except BaseException:
        pass
    return ""


def _errno(exc):
    err = getattr(exc, "errno", None)
    return err if type(err) is int else 0



# --- the checker: runs the checks against proxies ------------------------------------------------------
class Refused(Exception):
    """What the checker raises when the program's answer cannot be accepted (a check fails with it)."""


class NonBuiltinValue(Refused):
    pass


class ChannelTampered(Refused):
    pass


class ProgramGone(Refused):
    pass


class TooLarge(Refused):
    pass


class ProgramError(Exception):
    """An exception the program raised whose type is not a built-in exception."""


class Handle:
    """One of the program's objects, for tasks that allow them: it can be passed back, called, and have
    attributes read (each a call); it equals only itself and has no truth value."""

    __slots__ = ("_link", "_ref", "_type")

    def __init__(self, link, ref, type_name):
        self._link, self._ref, self._type = link, ref, type_name

    def __call__(self, *args, **kwargs):
        return self._link.call(self, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._link.call(self, name, None, op="getattr")

    def __bool__(self):
        raise TypeError(f"an object of the program's class {self._type} has no truth value here")

    def __repr__(self):
        return f"<{self._type} object of the program>"


class Link:
    """The checker's end of the two pipes: calls go out as data, answers come back as data."""

    def __init__(self, pid, calls, replies, objects, report):
        self.pid, self.calls, self.replies, self.objects, self.report = pid, calls, replies, objects, report
        self.buf = bytearray()
        self.next_id = 0
        self.gone = None  # how the candidate ended, once it has: {"code": n} or {"signal": n}
        self.broken = None  # the Refused error every later call gets, once the channel is not read any more
        self.flags = set()
        self.handles = {}
        try:
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def flag(self, what):
        if what not in self.flags:
            self.flags.add(what)
            self.report(kind="tamper", what=what)

    # -- the candidate's state --
    def _reap(self, block=False):
        """True once the candidate has ended (recording how)."""
        if self.gone is None:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid == 0:
                return False
            code = os.waitstatus_to_exitcode(status)
            self.gone = {"signal": -code} if code < 0 else {"code": code}
        return True

    def _wait_exit(self, seconds):
        import select

        if self.pidfd is not None:
            select.select([self.pidfd], [], [], seconds)
            return self._reap()
        for _ in range(int(seconds / 0.01)):
            if self._reap():
                return True
            select.select([], [], [], 0.01)
        return self._reap()

    def _gone_text(self):
        g = self.gone or {}
        if "signal" in g:
            import signal

            try:
                return "the program was killed by {}".format(signal.Signals(g["signal"]).name)
            except ValueError:
                return f"the program was killed by signal {g['signal']}"
        return f"the program exited with code {g.get('code', 0)}"

    # -- receiving --
    def _line(self):
        """The next line the candidate wrote; None once it has ended and nothing more is buffered."""
        import select

        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                return line
            if len(self.buf) > MAX_LINE:
                self.buf.clear()
                self.broken = TooLarge("the program returned a value too large to check")
                raise self.broken
            if self.gone is not None:
                return None
            fds = [self.replies] if self.pidfd is None else [self.replies, self.pidfd]
            ready = select.select(fds, [], [], None if self.pidfd is not None else 0.05)[0]
            if self.replies in ready:
                chunk = os.read(self.replies, 1 << 16)
                if chunk:
                    self.buf += chunk
                elif not self._wait_exit(WAIT_EXIT):
                    self.tampered("the program closed its end of the verifier's channel")
            elif self._reap():
                while select.select([self.replies], [], [], 0)[0]:  # what it wrote before it ended
                    chunk = os.read(self.replies, 1 << 16)
                    if not chunk:
                        break
                    self.buf += chunk

    def receive(self):
        """The next message (a parsed list); raises ProgramGone, TooLarge or ChannelTampered."""
        if self.broken is not None:
            raise type(self.broken)(str(self.broken))
        line = self._line()
        if line is None:
            raise ProgramGone(self._gone_text() + " before the checks finished")
        try:
            return parse(line.decode("ascii"))
        except (BadData, UnicodeDecodeError):
            return self.tampered("the program wrote something other than an answer on the verifier's channel")

    def tampered(self, why):
        """Stop reading the channel: this call and every later one fail; flagged as tampering."""
        self.broken = ChannelTampered(why)
        self.flag("channel")
        raise ChannelTampered(why)

    # -- calling --
    def _ref(self, v):
        return f'["h",{v._ref}]' if type(v) is Handle and v._link is self else None

    def _handle(self, x):
        if not self.objects or len(x) != 3 or type(x[1]) is not int or type(x[2]) is not str:
            raise BadData("reference")
        if x[1] not in self.handles:
            self.handles[x[1]] = Handle(self, x[1], _short(x[2], 80))
        return self.handles[x[1]]

    def call(self, target, args, kwargs, op="call"):
        """Call the program's `target` (a global's name or a Handle) with built-in arguments."""
        self.next_id += 1
        cid = self.next_id
        try:
            what = _quote(target) if type(target) is str else encode(target, self._ref)
            if op == "getattr":
                text = f'["getattr",{cid},{what},{_quote(args)}]\n'
            else:
                text = f'["call",{cid},{what},{encode(args, self._ref)},{encode(kwargs, self._ref)}]\n'
        except NotData as e:
            raise TypeError(f"an argument of type {e} cannot be passed to the program (built-in values only)") from None
        if self.broken is None and self.gone is None:
            try:
                _write_all(self.calls, text.encode())
            except OSError:  # it closed its end: see how it ended
                self._wait_exit(WAIT_EXIT)
        msg = self.receive()
        if len(msg) < 2 or type(msg[1]) is not int or msg[1] != cid or msg[0] not in ("ok", "err", "obj"):
            self.tampered("the program answered out of turn on the verifier's channel")
        kind, exc = msg[0], None
        try:
            if kind == "ok" and len(msg) == 4 and type(msg[3]) is list:
                result = value(msg[2], 0, self._handle)
                for k, new in [(value(c[0]), value(c[1], 0, self._handle)) for c in msg[3]]:
                    self._update(args, kwargs, k, new)
                return result
            if kind == "err" and len(msg) == 5 and type(msg[2]) is str and type(msg[3]) is str:
                exc = _exception(msg[2], _short(msg[3], 300), msg[4] if type(msg[4]) is int else 0)
            elif not (kind == "obj" and len(msg) == 3 and type(msg[2]) is str):
                raise BadData(kind)
        except (BadData, TypeError, IndexError, KeyError, AttributeError, ValueError):
            self.tampered("the program sent a malformed answer on the verifier's channel")
        if exc is None:
            self.flag("non-builtin")
            raise NonBuiltinValue(f"returned a non-builtin value ({_short(msg[2], 80)})")
        if isinstance(exc, ProgramGone):
            self.flag("exit")
        raise exc

    @staticmethod
    def _update(args, kwargs, k, new):
        """An argument the program changed in place (a list it sorted, a dict it filled): change ours."""
        old = args[k] if type(k) is int and 0 <= k < len(args) else kwargs[k]
        if type(old) is not type(new):
            raise BadData("changed argument")
        if type(old) is dict or type(old) is set:
            old.clear()
            old.update(new)
        else:
            old[:] = new

    def close(self):
        """No more calls: let the candidate exit (returns whether it had ended already, i.e. early).
        Anything it wrote that no call asked for (answers ahead of their calls) is flagged."""
        import select

        early = self._reap()
        os.close(self.calls)
        if not early:
            self._wait_exit(WAIT_EXIT)
        if self.broken is None and (self.buf or (select.select([self.replies], [], [], 0)[0]
                                                 and os.read(self.replies, 1))):
            self.flag("channel")
        return early


def _exception(name, message, err):
    """The checker's exception for one the program raised: the built-in class of that name (so a check's
    `except ValueError` keeps its meaning), else ProgramError; exits become ProgramGone."""
    import builtins

    if name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        return ProgramGone(f"the program raised {name} during the call")
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, Refused):
        try:
            return cls(err, message) if err and issubclass(cls, OSError) else cls(message)
        except Exception:
            pass
    return ProgramError(f"{name}: {message}")


def _proxy(link, name):
    def call(*args, **kwargs):
        return link.call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _namespace(link, exports):
    """The checks' globals: a proxy per function of the program, its plain values, its stdlib modules.
    A program may not shadow a built-in name the checks use (`abs`, `sorted`, `isinstance`, ...)."""
    import builtins

    g = {"__name__": "__main__", "__builtins__": builtins}
    if type(exports) is not list:
        raise BadData("exports")
    for item in exports:
        if type(item) is not list or len(item) < 2 or type(item[1]) is not str:
            raise BadData("export")
        kind, name = item[0], item[1]
        if not name.isidentifier() or hasattr(builtins, name):
            continue
        if kind == "f":
            g[name] = _proxy(link, name)
        elif kind == "v" and len(item) == 3:
            g[name] = value(item[2])
        elif kind == "m" and len(item) == 3 and item[2] in sys.stdlib_module_names:
            try:  # noqa: SIM105
                g[name] = __import__(item[2])
            except Exception:
                pass
    return g


def checker(link, checks, report):
    """Wait for the program, run every check against its exports, report each one. Returns whether the
    candidate was still needed (False once it reported that the program itself failed)."""
    try:
        msg = link.receive()
        if msg[0] != "program" or len(msg) < 3 or msg[1] not in (True, False):
            link.tampered("the program wrote on the verifier's channel before its first answer")
        if msg[1] is False:
            error = msg[3] if len(msg) > 3 and type(msg[3]) is str else "Error"
            if error in ("SystemExit", "KeyboardInterrupt"):
                link.flag("exit")
            report(kind="program", ok=False, verdict=_short(msg[2], 600) if type(msg[2]) is str else "failed",
                   error=_short(error, 60), errno=msg[4] if len(msg) > 4 and type(msg[4]) is int else 0)
            return False
        try:
            g = _namespace(link, msg[2])
        except BadData:
            link.tampered("the program sent malformed exports on the verifier's channel")
    except Refused as e:
        report(kind="program", ok=False, verdict="program: " + str(e), error=type(e).__name__, errno=0)
        return True
    n_counted = 0
    for i, (code, counted) in enumerate(checks):
        label = f"test {n_counted}" if counted else f"setup {i}"
        n_counted += bool(counted)
        try:
            exec(compile(code, "<" + label + ">", "exec"), g)
        except BaseException as e:
            verdict = _describe(e, code, label)
            if isinstance(e, AssertionError):
                verdict += _got(code, g)
            report(kind="check", i=i, counted=counted, ok=False, verdict=verdict, error=type(e).__name__,
                   errno=_errno(e))
        else:
            report(kind="check", i=i, counted=counted, ok=True)
    return True
