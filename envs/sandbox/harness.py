"""The program that runs inside the sandbox: drops root, sets limits, runs the untrusted code and its checks.

It is passed to the sandboxed interpreter with ``python -S -s -B -c <this file's text>`` (stdlib only, no
imports from the project). argv[1] is a hex-encoded marshal of the uid/gid to become, the rlimits, the
result fd and a nonce; stdin carries the program and its checks (marshal too: the host runs this same
interpreter, and marshal loads in a fraction of json's import time). Results go to the result fd as JSON
lines tagged with the nonce, one per check as it finishes, so partial credit survives a later timeout.
Untrusted code runs in this same process (that is what a unit test is); it could forge a result line only
by digging the nonce out of this interpreter's memory, which the verifier accepts as a residual risk.
"""

import marshal
import os
import sys
from _json import encode_basestring_ascii as _quote


def _drop_and_limit(cfg):
    import resource  # before dropping root: the interpreter's files may be unreadable afterwards

    # Root inside the sandbox (bwrap or the fallback launcher started us as uid 0): become the unprivileged
    # uid before touching any untrusted input. setuid from root clears every capability.
    if os.getuid() == 0 and cfg.get("uid") is not None:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
        if os.getuid() == 0 or os.geteuid() == 0:
            raise SystemExit("sandbox: failed to drop root")
    for name, value in cfg["rlimits"].items():
        soft, hard = value
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _short(text, n=300):
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


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
    if isinstance(exc, AssertionError):
        text = label + " failed: " + _short(src or "assert", 200)
        if msg:
            text += " -- " + _short(msg, 120)
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
    return err if isinstance(err, int) and not isinstance(err, bool) else 0


def _json_value(v):
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return _quote(str(v))


def main():
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    _drop_and_limit(cfg)
    write, fd, nonce, quote, value = os.write, cfg["result_fd"], cfg["nonce"], _quote, _json_value

    def report(**rec):
        rec["nonce"] = nonce
        line = "{" + ",".join(quote(k) + ":" + value(v) for k, v in rec.items()) + "}\n"
        write(fd, line.encode())

    req = marshal.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    report(kind="start")
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    program = req["program"]
    try:
        exec(compile(program, "<program>", "exec"), g)
    except BaseException as e:
        report(kind="program", ok=False, verdict=_describe(e, program, "program"),
               error=type(e).__name__, errno=_errno(e))
    else:
        n_counted = 0
        for i, (code, counted) in enumerate(req["checks"]):
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
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    report(kind="done")
    os._exit(0)


if __name__ == "__main__":
    main()
