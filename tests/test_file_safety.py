"""No command destroys what the user did not ask to destroy, and one process runs a run at a time.

Each command that writes is pointed at things that are not its own (a project folder, a plain file, a
directory of unrelated files) through the real console script: exit 1, one sentence, no traceback, and
every byte of the user's files still there. Its own outputs are replaced only as documented (data files
as any `-o FILE`; model and run directories with --overwrite). A run directory is locked with flock: a
second process is refused naming the holder, and a dead holder's lock is taken over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from envs.errors import UserError
from envs.io import MARKER, atomic_dir, check_dir_output, write_marker
from search.tree import write_trees
from selfimprove.rundir import LOCK, RunDir

CLI = str(Path(sys.executable).parent / "selfimprove")
FIXTURES = Path(__file__).parent / "fixtures"


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (or `root` itself when a file) with its bytes."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(res: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 1 with one sentence on stderr that names what it must, and no traceback."""
    assert res.returncode == 1, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in res.stderr, (needle, res.stderr)


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project folder that happens to hold a config.yaml."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('my work')\n")
    (root / "NOTES.md").write_text("three weeks of notes\n")
    (root / "config.yaml").write_text("name: mine\nlearning_rate: 0.1\n")
    return root


# --- demo and run --------------------------------------------------------------------------------------
def test_demo_never_deletes_a_folder_it_did_not_write(project):
    before = snapshot(project)
    for extra in ((), ("--overwrite",), ("--fresh",)):
        res = cli("demo", "--out", str(project), *extra)
        assert_refused(res, str(project), "selfimprove did not write", "nothing was changed")
        assert snapshot(project) == before


def test_demo_and_run_refuse_a_plain_file(tmp_path, tiny_policy_dir):
    f = tmp_path / "results.csv"
    f.write_text("a,b\n1,2\n")
    assert_refused(cli("demo", "--out", str(f)), "is a file")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"policy": {"path": tiny_policy_dir}}))
    assert_refused(cli("run", str(cfg), "--out", str(f)), "is a file")
    assert f.read_text() == "a,b\n1,2\n"


def test_demo_on_its_own_run_with_another_config_needs_overwrite(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    write_marker(out, "run")
    (out / "config.yaml").write_text(yaml.safe_dump({"name": "demo", "iterations": 7}))
    before = snapshot(out)
    assert_refused(cli("demo", "--out", str(out)), "another config", "--overwrite")
    assert snapshot(out) == before


def test_run_refuses_folders_that_are_not_its_runs(project, tmp_path, tiny_policy_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"policy": {"path": tiny_policy_dir}}))
    before = snapshot(project)
    for extra in ((), ("--resume",), ("--overwrite",)):
        assert_refused(cli("run", str(cfg), "--out", str(project), *extra), "selfimprove did not write")
        assert snapshot(project) == before
    assert_refused(cli("run", str(cfg), "--out", str(tmp_path / "new"), "--resume", "--overwrite"), "give one")
    assert not (tmp_path / "new").exists()


def test_claim_starts_over_only_its_own_run(tmp_path):
    run = RunDir(tmp_path / "r")
    with run.claim():
        assert (run.root / MARKER).is_file() and (run.root / LOCK).is_file()
    (run.root / "iter-000").mkdir()
    (run.root / "iter-000" / "trees.jsonl").write_text("")
    with pytest.raises(UserError, match="a run already lives here; pass --resume"), run.claim():
        pass
    with run.claim(resume=True):
        assert (run.root / "iter-000" / "trees.jsonl").exists()
    with run.claim(overwrite=True):
        assert sorted(p.name for p in run.root.iterdir()) == sorted([MARKER, LOCK])
    empty = tmp_path / "empty"
    empty.mkdir()
    with RunDir(empty).claim():  # an empty directory is free to use
        pass


HOLD = """
import sys, time
from selfimprove.rundir import RunDir
with RunDir(sys.argv[1]).claim(resume=sys.argv[2] == "resume"):
    print("holding", flush=True)
    time.sleep(600)
"""


def _holder(run: Path, mode: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run), mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "holding"
    return p


def test_a_second_process_on_a_run_is_refused_naming_the_holder(tmp_path, tiny_policy_dir):
    import socket

    run = tmp_path / "run"
    holder = _holder(run, "new")
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump({"policy": {"path": tiny_policy_dir}}))
        res = cli("run", str(cfg), "--out", str(run), "--resume")
        assert_refused(res, str(run), "another selfimprove process", f"pid {holder.pid}", socket.gethostname())
        with pytest.raises(UserError, match=f"pid {holder.pid} on host"), RunDir(run).claim(resume=True):
            pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died (SIGKILL: no cleanup ran); its lock file still names it, and the lock is taken over
    assert str(holder.pid) in (run / LOCK).read_text()
    with RunDir(run).claim(resume=True):
        assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()


# --- model directories -----------------------------------------------------------------------------------
def test_train_refuses_a_file_or_a_folder_of_unrelated_files(project, tmp_path, tiny_policy_dir):
    pairs = FIXTURES / "pairs_trees.jsonl"  # any readable input: the --out check comes first
    f = tmp_path / "model.bin"
    f.write_bytes(b"\x00weights")
    for out, needle in ((f, "is a file"), (project, "selfimprove did not write")):
        before = snapshot(out)
        res = cli("train", "--policy", tiny_policy_dir, "--data", str(pairs), "--out", str(out), "--overwrite")
        assert_refused(res, f"--out '{out}'", needle)  # not even with --overwrite
        assert snapshot(out) == before
    res = cli("train-value", "--trees", str(pairs), "--init", tiny_policy_dir, "--out", str(project))
    assert_refused(res, f"--out '{project}'", "selfimprove did not write")
    assert snapshot(project) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "project"]  # no temp dirs left


def test_train_replaces_its_own_model_only_with_overwrite(tmp_path, tiny_policy_dir):
    from test_train import arith_pairs

    from selfimprove.pairs import write_records

    data = tmp_path / "pairs.jsonl"
    write_records(data, arith_pairs(4, 0))
    out = tmp_path / "policy"
    args = ("train", "--policy", tiny_policy_dir, "--data", str(data), "--out", str(out), "--loss", "dpo",
            "--epochs", "1")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / MARKER).read_text())["kind"] == "policy"
    before = snapshot(out)
    assert_refused(cli(*args), "already holds a policy selfimprove wrote", "--overwrite")
    assert snapshot(out) == before
    again = cli(*args, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert (out / "config.json").is_file() and (out / MARKER).is_file()


def test_atomic_dir_checks_before_the_work_and_leaves_nothing(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    ran = []
    with pytest.raises(UserError, match="selfimprove did not write"), atomic_dir(out, replace="ours"):
        ran.append(1)
    assert ran == [] and snapshot(out) == {"keep.txt": b"mine"}
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(UserError, match="symbolic link"):
        check_dir_output(link, "ours")
    check_dir_output(out, "any")  # the loop's own paths inside its locked run directory


def test_policy_init_rebuilds_another_tiny_policy_only_with_overwrite(tmp_path):
    from selfimprove.train.tiny_policy import FORMAT, MANIFEST, build_tiny_policy

    out = tmp_path / "tiny"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (out / name).write_text("{}")
    (out / MANIFEST).write_text(json.dumps({"settings": {"format": FORMAT, "steps": 9999}, "summary": {}}))
    before = snapshot(out)
    with pytest.raises(UserError, match="built with other settings; pass --overwrite"):
        build_tiny_policy("arithmetic", out, steps=2, eval_problems=2)
    assert snapshot(out) == before


# --- data files ------------------------------------------------------------------------------------------
def test_file_outputs_replace_only_their_own_files(project, tmp_path, tiny_policy_dir):
    trees = FIXTURES / "pairs_trees.jsonl"
    notes = project / "NOTES.md"
    before = snapshot(project)
    assert_refused(cli("pairs", "--trees", str(trees), "--out", str(notes)), "is not a file selfimprove wrote")
    assert_refused(cli("pairs", "--trees", str(trees), "--out", str(project)), "is a directory")
    assert_refused(cli("tree", "export", str(trees), "--out", str(notes)), "is not a file selfimprove wrote")
    assert_refused(cli("search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--out", str(notes)),
                   "is not a file selfimprove wrote")
    assert_refused(cli("search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--out", str(project)),
                   "is a directory")
    assert snapshot(project) == before
    mine = tmp_path / "trees.jsonl"
    mine.write_bytes(trees.read_bytes())
    assert_refused(cli("pairs", "--trees", str(mine), "--out", str(mine)), "is also the command's input")
    assert mine.read_bytes() == trees.read_bytes()
    # its own outputs are replaced, as any `-o FILE` would be
    pairs = tmp_path / "pairs.jsonl"
    for _ in range(2):
        assert cli("pairs", "--trees", str(trees), "--out", str(pairs)).returncode == 0
    for fmt in ("json", "graphml", "dot"):
        out = tmp_path / f"t.{fmt}"
        for _ in range(2):
            res = cli("tree", "export", str(trees), "--format", fmt, "--out", str(out))
            assert res.returncode == 0, res.stderr


# --- a full disk ---------------------------------------------------------------------------------------
def _can_mount_tmpfs() -> str | None:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"no user+mount namespaces for a small tmpfs: {probe.stderr.strip()}"


needs_tmpfs = pytest.mark.skipif(_can_mount_tmpfs() is not None, reason=str(_can_mount_tmpfs()))


def in_small_disk(directory: Path, size: str, command: list[str]) -> subprocess.CompletedProcess:
    """Run `command` with a `size` tmpfs mounted on `directory` (in a private mount namespace: nothing
    outside sees it); stdout ends with a line "left: ..." listing what the disk holds afterwards."""
    script = (f"mount -t tmpfs -o size={size} tmpfs {directory} || exit 99\n"
              f"{' '.join(_q(w) for w in command)}; rc=$?\necho left: $(ls -A {directory}); exit $rc")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=300)


def _q(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


@needs_tmpfs
def test_a_full_disk_is_one_sentence_naming_the_file(tmp_path, tiny_policy_dir):
    disk = tmp_path / "disk"
    disk.mkdir()
    trees = FIXTURES / "pairs_trees.jsonl"
    big = [CLI, "tree", "export", str(trees), "--format", "graphml", "--out", str(disk / "t.graphml")]
    res = in_small_disk(disk, "4k", big)
    assert_refused(res, str(disk / "t.graphml"), "no space left on device")
    assert res.stdout.strip() == "left:"  # no temp file left behind
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "Q: 1+1\n", "completion": "A: 2\n"}) + "\n")
    train = [CLI, "train", "--policy", tiny_policy_dir, "--data", str(data), "--loss", "sft", "--epochs", "1",
             "--out", str(disk / "policy")]
    res = in_small_disk(disk, "64k", train)
    assert_refused(res, f"{disk / 'policy'}: could not be written (no space left on device)")
    assert res.stdout.strip().endswith("left:")  # no temp directory left behind


@needs_tmpfs
@pytest.mark.slow
def test_a_run_on_a_full_disk_stops_with_one_sentence_and_resumes(tmp_path, tiny_policy_dir):
    from test_loop import tiny_config

    disk, logs = tmp_path / "disk", tmp_path / "logs"
    disk.mkdir()
    logs.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_policy_dir, iterations=1, value={"enabled": False})))
    run = f"{CLI} run {cfg} --out {disk / 'run'}"
    # 300 KiB holds the config, trees and pairs but not the trained policy; then the disk grows and
    # --resume finishes the run from the stage that failed
    script = (f"mount -t tmpfs -o size=300k tmpfs {disk} || exit 99\n"
              f"{run} >{logs}/1.out 2>{logs}/1.err; echo $? >{logs}/1.rc\n"
              f"mount -o remount,size=64m {disk}\n"
              f"{run} --resume --json >{logs}/2.out 2>{logs}/2.err; echo $? >{logs}/2.rc\n"
              f"ls -A {disk}/run/iter-000 >{logs}/ls\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, timeout=900, check=True)
    err = (logs / "1.err").read_text()  # the run's progress lines, then one sentence
    assert (logs / "1.rc").read_text().strip() == "1" and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and err.count("error:") == 1, err[-3000:]
    assert str(disk / "run") in last and "no space left on device" in last and "--resume" in last, last
    assert (logs / "2.rc").read_text().strip() == "0", (logs / "2.err").read_text()[-3000:]
    assert json.loads((logs / "2.out").read_text().strip().splitlines()[-1])["rows"]
    assert sorted((logs / "ls").read_text().split()) == ["metrics.json", "pairs.jsonl", "policy", "trees.jsonl"]


def test_tree_files_we_write_are_recognised(tmp_path):
    from test_tree_view import hand_tree

    from envs.io import written_by_us

    path = tmp_path / "t.jsonl"
    write_trees(path, [hand_tree()])
    assert written_by_us(path)
    other = tmp_path / "o.jsonl"
    other.write_text('{"a": 1}\n')
    assert not written_by_us(other)
