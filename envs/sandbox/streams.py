"""One run's pipes on the host side: feed the sandbox's stdin, drain stdout, stderr and the result fd.

Output is capped per stream (`Limits.output_bytes`; the result channel gets `max_output_bytes`), and
pumping stops at the deadline or once the sandbox wrote more than `max_output_bytes` in all, so an
output flood is killed rather than buffered.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time


class Streams:
    """Drain the child's pipes with caps, feed its stdin, and stop at the deadline or the output limit."""

    def __init__(self, proc: subprocess.Popen, result_r: int, payload: bytes, limits):
        self.proc, self.limits = proc, limits
        self.sel = selectors.DefaultSelector()
        self.bufs = {"stdout": bytearray(), "stderr": bytearray(), "result": bytearray()}
        self.truncated = {"stdout": False, "stderr": False, "result": False}
        self.total_output = 0
        self.payload = memoryview(payload)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None  # all PIPE
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
                    if key.data == "stdin" or not os.read(key.fd, 65536):
                        self.sel.unregister(key.fileobj)

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fileobj)
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr, self.result_file):
            with contextlib.suppress(OSError):
                if f is not None:
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
