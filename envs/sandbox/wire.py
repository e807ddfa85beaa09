"""Values as data between the sandbox's two processes: exact built-in types as tagged JSON, and frames.

The candidate (untrusted) and the checker (trusted) exchange one JSON array per line. A value is encoded
from exact built-in types only (``type(x) is int``, never isinstance: a subclass that overrides
comparison is not data) and decoded by `value` from what the C JSON scanner parsed, so whatever the
candidate writes, the checker ends up with plain built-in values or a BadData, never an object of the
candidate's making. Stdlib only: the host sends this text, with checker.py and harness.py, into the
sandbox as one compiled program.
"""

import marshal
import os
from _json import encode_basestring_ascii as _quote
from _json import make_scanner as _make_scanner

MAX_DEPTH = 100  # nesting of one value


class NotData(Exception):
    """A value that is not made of exact built-in types (or nests too deep)."""


class BadData(Exception):
    """Text from the other process that is not a well-formed message or value."""


_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f"}
_BUILD = {"l": list, "t": tuple, "s": set, "f": frozenset}


def encode(v, handle=None):
    """`v` as JSON text: None, bool, int, float and str as themselves; list, tuple, set, frozenset, dict,
    bytes, bytearray and complex as ``["tag", ...]``. Any other type raises NotData, unless `handle(v)`
    returns the text of an opaque reference (the candidate's objects, for tasks that allow them)."""
    out = []
    _enc(v, out, 0, handle)
    return "".join(out)


def _enc(v, out, depth, handle):
    t = type(v)
    if v is None:
        out.append("null")
    elif t is bool:
        out.append("true" if v else "false")
    elif t is int:
        out.append(str(v))
    elif t is float:
        out.append(repr(v) if v - v == 0 else "NaN" if v != v else "Infinity" if v > 0 else "-Infinity")
    elif t is str:
        out.append(_quote(v))
    elif depth >= MAX_DEPTH:
        raise NotData(f"nested more than {MAX_DEPTH} levels")
    elif t in _TAGS:
        out.append('["' + _TAGS[t] + '"')
        for x in v:
            out.append(",")
            _enc(x, out, depth + 1, handle)
        out.append("]")
    elif t is dict:
        out.append('["d"')
        for k, x in v.items():
            out.append(",")
            _enc(k, out, depth + 1, handle)
            out.append(",")
            _enc(x, out, depth + 1, handle)
        out.append("]")
    elif t is bytes or t is bytearray:
        out.append('["' + ("b" if t is bytes else "y") + '","' + v.hex() + '"]')
    elif t is complex:
        out.append('["c",' + encode(v.real) + "," + encode(v.imag) + "]")
    else:
        ref = handle(v) if handle is not None else None
        if ref is None:
            raise NotData(t.__name__)
        out.append(ref)


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


_scan = _make_scanner(_Ctx())  # pyright: ignore[reportArgumentType]  (the C scanner reads these attributes)


def parse(text):
    """One JSON array (a message) from `text`, else BadData. Nothing in the text is ever run."""
    try:
        obj, end = _scan(text, 0)
    except Exception as e:  # StopIteration, JSONDecodeError, RecursionError, MemoryError
        raise BadData(f"not JSON ({type(e).__name__})") from None
    if end != len(text) or type(obj) is not list or not obj:
        raise BadData("not a message")
    return obj


def value(x, depth=0, handle=None):
    """The built-in value a parsed encoding stands for (BadData when it is not one of ours); ``["h", ...]``
    references go to `handle`."""
    t = type(x)
    if t is int or t is float or t is str or t is bool or x is None:
        return x
    if t is not list or not x or type(x[0]) is not str or depth >= MAX_DEPTH:
        raise BadData("not a value")
    tag = x[0]
    try:
        if tag in _BUILD:
            return _BUILD[tag]([value(i, depth + 1, handle) for i in x[1:]])
        if tag == "d" and len(x) % 2 == 1:
            it = iter(x[1:])
            return {value(k, depth + 1, handle): value(v, depth + 1, handle) for k, v in zip(it, it, strict=False)}
        if tag in ("b", "y") and len(x) == 2 and type(x[1]) is str:
            return (bytes if tag == "b" else bytearray).fromhex(x[1])
        if tag == "c" and len(x) == 3 and type(x[1]) in (int, float) and type(x[2]) in (int, float):
            return complex(x[1], x[2])
        if tag == "h" and handle is not None:
            return handle(x)
    except BadData:
        raise
    except Exception as e:  # unhashable set members or keys, bad hex, unknown references
        raise BadData(f"bad {tag!r} value ({type(e).__name__})") from None
    raise BadData(f"bad {tag!r} value")



def _short(text, n=300):
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


def _read_frame(fd):
    """One length-prefixed marshal frame from `fd`, read exactly: the next frame stays in the pipe."""
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise SystemExit("sandbox: stdin ended early")
            buf += chunk
        return buf
    return marshal.loads(exact(int.from_bytes(exact(4), "big")))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
