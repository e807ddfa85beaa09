"""From what one run left behind (the checker's records, the sandbox's exit, its output) to a `Result`.

Only the result fd is parsed for the verdict, and only records carrying this run's nonce count; what the
program printed is shown, never parsed, except to flag output that imitates result records ("forged").
"""

from __future__ import annotations

import errno
import json
import signal
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "failed", "timeout", "crashed", "killed", "limit"]
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGSYS}
LIMIT_SIGNALS = {signal.SIGXCPU, signal.SIGXFSZ}
LIMIT_ERRNOS = {errno.EFBIG, errno.ENOSPC, errno.EMFILE}  # file size, disk and open-file limits
RECORD_KINDS = {"start", "program", "check", "tamper", "gone", "done"}
TAMPERING = {
    "non-builtin": "returned a non-builtin value",
    "channel": "wrote something other than answers on the verifier's channel",
    "exit": "exited while the checks still needed it",
    "forged": "printed lines that imitate the verifier's result records",
}


@dataclass(frozen=True)
class Check:
    """One unit of a test suite: code the checker runs with the program's functions and values in its
    namespace; passes if it raises nothing. Uncounted checks are setup (imports, helpers): they run in
    order but do not count toward the score."""

    code: str
    counted: bool = True


@dataclass
class Result:
    """What one sandboxed run did. `verdict` is the first failure (or the reason the run stopped);
    `tampering` names what the program did to the verifier besides being wrong (see TAMPERING)."""

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
    tampering: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """Fraction of counted checks passed; 1.0 only when the run finished and every check passed."""
        if self.status == "ok":
            return 1.0
        return self.passed / self.total if self.total else 0.0


def parse_records(raw: bytes, nonce: str) -> list[dict]:
    """The checker's records: JSON objects, one per line, carrying `nonce`; anything else is skipped."""
    out = []
    for line in raw.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("nonce") == nonce:
            out.append(rec)
    return out


def forged(text: str) -> bool:
    """Whether `text` (the program's output) holds a line shaped like a result record."""
    if '"kind"' not in text:
        return False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"kind"' in line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("kind") in RECORD_KINDS:
                return True
    return False


def _signal_name(sig: int) -> str:
    return signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)


def _ended(gone: dict) -> tuple[Status, str, int | None, int | None]:
    """(status, why, exit code, signal) for a program that ended before the checks were done with it."""
    sig = gone.get("signal")
    if sig is None:
        code = int(gone.get("code", 0))
        return "crashed", f"exited with code {code} before the checks finished", code, None
    if sig in LIMIT_SIGNALS:
        return "limit", f"killed by {_signal_name(sig)} (resource limit)", None, sig
    if sig in CRASH_SIGNALS:
        return "crashed", f"crashed with {_signal_name(sig)}", None, sig
    return "killed", f"killed by {_signal_name(sig)}", None, sig


def build_result(checks: list[Check], recs: list[dict], *, stop: str | None, rc: int, mode: str,
                 limits, stdout: str, stderr: str, truncated: dict[str, bool], duration: float) -> Result:
    """The Result of one run. `stop` is why the host stopped pumping (None, 'timeout' or 'output');
    `rc` the sandbox's exit status (negative: killed by that signal)."""
    counted = [i for i, c in enumerate(checks) if c.counted]
    ok_by_index = {r["i"]: bool(r.get("ok")) for r in recs if r.get("kind") == "check"}
    passed = sum(1 for i in counted if ok_by_index.get(i))
    failures = [r for r in recs if r.get("kind") in ("program", "check") and not r.get("ok")]
    done = any(r.get("kind") == "done" for r in recs)
    started = any(r.get("kind") == "start" for r in recs)
    gone = next((r for r in recs if r.get("kind") == "gone"), None)
    tampering = {str(r.get("what")) for r in recs if r.get("kind") == "tamper"} & set(TAMPERING)
    if forged(stdout) or forged(stderr):
        tampering.add("forged")
    sig = -rc if rc < 0 else (rc - 128 if rc > 128 and not done and mode != "none" else None)
    exit_code = None if sig is not None else rc  # a signal death has no exit code
    if stop == "timeout":
        status, why = "timeout", f"timed out after {limits.timeout:g} s"
    elif stop == "output":
        status, why = "limit", f"output limit exceeded ({limits.max_output_bytes} bytes)"
    elif done and not failures and passed == len(counted):
        status, why = "ok", "all checks passed"
    elif done and gone is not None:
        status, why, exit_code, sig = _ended(gone)
    elif done:
        hit = any(r.get("error") == "MemoryError" or r.get("errno") in LIMIT_ERRNOS for r in failures)
        status, why = ("limit" if hit else "failed"), ""
    elif sig is not None and sig in LIMIT_SIGNALS:
        status, why = "limit", f"killed by {_signal_name(sig)} (resource limit)"
    elif sig is not None and sig in CRASH_SIGNALS:
        status, why = "crashed", f"crashed with {_signal_name(sig)}"
    elif sig is not None:
        status, why = "killed", f"killed by {_signal_name(sig)}"
    elif not started:
        status, why = "crashed", f"sandbox failed to start (exit {rc}): {stderr[-300:]}"
    else:
        status, why = "crashed", f"exited with code {rc} before the checks finished"
    real = [r for r in failures if not (gone is not None and r.get("error") == "ProgramGone"
                                        and r.get("kind") == "program")]
    verdict = real[0]["verdict"] if real else why
    if real and status in ("timeout", "limit", "crashed", "killed") and why:
        verdict = f"{why}; first failure: {verdict}"
    return Result(status=status, passed=passed, total=len(counted), verdict=verdict, exit_code=exit_code,
                  signal=sig, stdout=stdout, stderr=stderr, stdout_truncated=truncated["stdout"],
                  stderr_truncated=truncated["stderr"], duration=duration, mode=mode,
                  checks=[bool(ok_by_index.get(i)) for i in counted], tampering=sorted(tampering))
