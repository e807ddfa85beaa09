"""The sandbox's seccomp filter: no kernel keyring, no new user namespace, no tracing, for every process.

Pool uids are reused from run to run, and keys in the kernel's user keyring outlive a run, so a program
could leave data for the next one: ``add_key``, ``request_key`` and ``keyctl`` fail with EPERM. A user
namespace would give a program every capability inside it (bubblewrap as root has no user namespace of
its own to disable nesting in): ``unshare`` and ``clone`` with CLONE_NEWUSER fail with EPERM, and
``clone3`` (whose flags a filter cannot read) with ENOSYS, so libc falls back to ``clone``. ``ptrace``
and ``process_vm_readv``/``writev`` fail too (a second lock on the checker, which another uid or
non-dumpability already protects). System calls of a foreign ABI (i386 or x32 on x86_64) all fail.

`program()` is the classic-BPF program as bytes (struct sock_filter[]), which bubblewrap loads from a
file descriptor (``--seccomp FD``) and the fallback launcher installs with prctl(PR_SET_SECCOMP).
None on architectures without a table here (the sandbox then runs without the filter).
"""

from __future__ import annotations

import errno
import functools
import platform
import struct

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NR = {
    "x86_64": {"add_key": 248, "request_key": 249, "keyctl": 250, "ptrace": 101, "process_vm_readv": 310,
               "process_vm_writev": 311, "unshare": 272, "clone": 56, "clone3": 435},
    "aarch64": {"add_key": 217, "request_key": 218, "keyctl": 219, "ptrace": 117, "process_vm_readv": 270,
                "process_vm_writev": 271, "unshare": 97, "clone": 220, "clone3": 435},
}
DENIED = ("add_key", "request_key", "keyctl", "ptrace", "process_vm_readv", "process_vm_writev")
CLONE_NEWUSER = 0x10000000
X32_BIT = 0x40000000

LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # struct seccomp_data; args are u64, the low half first (little-endian)


def _assemble(code: list[tuple]) -> bytes:
    """Instructions (op, k, jump-if-true label, jump-if-false label) and ("label", name) into bytes."""
    labels, pc = {}, 0
    for ins in code:
        if ins[0] == "label":
            labels[ins[1]] = pc
        else:
            pc += 1
    out, pc = [], 0
    for ins in code:
        if ins[0] == "label":
            continue
        op, k, jt, jf = (*ins, None, None)[:4]
        rel = [0 if j is None else labels[j] - pc - 1 for j in (jt, jf)]
        assert all(0 <= r < 256 for r in rel), "seccomp jump out of range"
        out.append(struct.pack("=HBBI", op, rel[0], rel[1], k))
        pc += 1
    return b"".join(out)


@functools.cache
def program(machine: str | None = None) -> bytes | None:
    """The filter for `machine` (default: this one), or None when there is no syscall table for it."""
    machine = machine or platform.machine()
    if machine not in NR:
        return None
    nr = NR[machine]
    code: list[tuple] = [(LD_W_ABS, OFF_ARCH), (JEQ_K, AUDIT_ARCH[machine], "native", "eperm"),
                         ("label", "native"), (LD_W_ABS, OFF_NR)]
    if machine == "x86_64":
        code.append((JGE_K, X32_BIT, "eperm", None))
    code += [(JEQ_K, nr[name], "eperm", None) for name in DENIED]
    code += [(JEQ_K, nr["clone3"], "enosys", None), (JEQ_K, nr["unshare"], "flags", None),
             (JEQ_K, nr["clone"], "flags", None), (RET_K, RET_ALLOW),
             ("label", "flags"), (LD_W_ABS, OFF_ARG0), (JSET_K, CLONE_NEWUSER, "eperm", None), (RET_K, RET_ALLOW),
             ("label", "eperm"), (RET_K, RET_ERRNO | errno.EPERM),
             ("label", "enosys"), (RET_K, RET_ERRNO | errno.ENOSYS)]
    return _assemble(code)
