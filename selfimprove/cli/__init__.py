"""`selfimprove` console script: registers the command modules, turns UserErrors into one sentence."""

from __future__ import annotations

import errno
import sys

import click

from envs.errors import UserError
from envs.io import write_failure
from selfimprove.cli.app import app, err_console

# Each module registers its commands on `app` when imported.
from selfimprove.cli import envs_cmd  # noqa: F401  isort: skip
from selfimprove.cli import search_cmd  # noqa: F401  isort: skip
from selfimprove.cli import pairs_cmd, train_cmd  # noqa: F401  isort: skip
from selfimprove.cli import policy_cmd  # noqa: F401  isort: skip
from selfimprove.cli import eval_cmd, run_cmd, tree_cmd  # noqa: F401  isort: skip


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 1
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.exceptions.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # a full disk outside the artifact writers (which name their file themselves)
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        err_console.print(f"[bold red]error:[/] {write_failure(e.filename or 'a file', e)}", highlight=False,
                          soft_wrap=True)
        return 1
    return 0


def entry() -> None:
    sys.exit(main())
