"""A loop stage as its own multi-process job: `accelerate launch -m selfimprove.cli train ...` (or
`train-value`) with the stage's trainer config passed as `--set` fields, the user's accelerate config
file and process count, and the summary read back from the command's `--json` line.

accelerate is the launcher (torchrun underneath for DDP / FSDP, deepspeed for ZeRO): nothing here starts
or watches processes beyond one `subprocess.run` of it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from envs.errors import UserError


def free_port() -> int:
    """A TCP port nobody listens on now (for the launched job's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(args: Sequence[str], *, num_processes: int | None, config_file: str | None) -> list[str]:
    """The `accelerate launch` command line that runs `python -m selfimprove.cli ARGS`.

    Without a config file, several processes use accelerate's torchrun launcher (`--multi_gpu`; on a
    machine without GPUs the processes join over gloo on the CPU).
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        cmd += ["--config_file", os.path.expanduser(config_file)]
    else:
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if (num_processes or 1) > 1:
            cmd += ["--multi_gpu"]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    cmd += ["--main_process_port", str(free_port()), "-m", "selfimprove.cli", *args, "--json"]
    return cmd


def set_options(fields: Mapping[str, Any]) -> list[str]:
    """A trainer config's fields as `--set key=value` options (scalars only, as JSON)."""
    out: list[str] = []
    for k, v in fields.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def launch_stage(label: str, args: Sequence[str], fields: Mapping[str, Any], *, num_processes: int | None,
                 config_file: str | None) -> dict[str, Any]:
    """Run `selfimprove ARGS --set FIELDS... --json` under accelerate launch; its summary as a dict.

    The job's progress and errors go to this process's stderr; a failed job is a UserError naming the stage.
    """
    cmd = accelerate_command([*args, *set_options(fields)], num_processes=num_processes, config_file=config_file)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise UserError(f"{label}: `accelerate launch` exited with status {proc.returncode} (its errors are above)")
    return json.loads(lines[-1])
