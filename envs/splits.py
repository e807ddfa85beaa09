"""Train/test splits every environment shares: a stable 1-in-5 hash, and problems read from user JSONL files.

`held_out(text)` puts a text in the test split by a hash that is the same on every machine and run, so
train and test never share a problem. `FileSplits` is the part of an environment whose problems come
from `train_path` / `test_path` JSONL files: each file is parsed once, test questions never reach train,
and with only `train_path` one in five problems (by `held_out`) is held out for test.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, ClassVar, cast

from envs.errors import UserError
from envs.types import Problem

TEST_SHARE = 5  # one in five texts is held out for test


def held_out(text: str) -> bool:
    """Whether `text` belongs to the test split (stable sha256 hash, one in TEST_SHARE)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % TEST_SHARE == 0


class FileSplits:
    """Mixin for environments whose config has `train_path` and `test_path`; subclasses define `parse_file`."""

    name: ClassVar[str]  # the Environment's
    config: Any          # the Environment's config: it has train_path and test_path

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._files: dict[str, list[Problem]] = {}

    def parse_file(self, path: str) -> list[Problem]:
        """Every problem in `path`, in file order; a malformed line is a UserError naming file:line."""
        raise NotImplementedError

    def read_file(self, path: str) -> list[Problem]:
        """`parse_file(path)`, once per path; an empty file is a UserError."""
        if path not in self._files:
            problems = self.parse_file(path)
            if not problems:
                raise UserError(f"{path}: no problems in the file")
            self._files[path] = problems
        return self._files[path]

    def split_problems(self, split: str) -> list[Problem]:
        """All problems of `split`, in file order; train never holds a question that test holds."""
        c = self.config
        if split not in ("train", "test"):
            raise UserError(f"environment '{self.name}': unknown split '{split}' (use 'train' or 'test')")
        if c.train_path is None and c.test_path is None:
            raise UserError(f"environment '{self.name}': field 'train_path': set train_path and/or test_path "
                            "to your JSONL files")
        if c.test_path is not None:
            test = self.read_file(c.test_path)
            if split == "test":
                return test
            if c.train_path is None:
                raise UserError(f"environment '{self.name}': field 'train_path': no train_path set")
            held = {p.prompt for p in test}
            return [p for p in self.read_file(c.train_path) if p.prompt not in held]
        train_path = cast(str, c.train_path)  # set: one of the two paths is (checked above)
        return [p for p in self.read_file(train_path) if held_out(p.prompt) == (split == "test")]

    def load(self, split: str, count: int, seed: int = 0) -> list[Problem]:
        """`count` problems of `split` in a seeded order (all of them when the files hold fewer)."""
        problems = list(self.split_problems(split))
        random.Random(f"{self.name}:{seed}").shuffle(problems)
        return problems[:count]
