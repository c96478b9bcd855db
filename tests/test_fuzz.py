"""Random damage to a real checkpoint, a real archive and a real config: every case ends in exit 0 with the right
result or exit 2 with one line, never a traceback or a hang. The CLI runs in this process, so that a few hundred
cases take seconds; each case has a time limit."""
import contextlib
import copy
import io
import json
import os
import random
import resource
import shutil
import signal
import tarfile
from pathlib import Path

import pytest

from cifar_archive import synthetic_batches, write_archive
from DNSD import main as cli
from helpers import ROOT, read_json

CASES = 150  # of each kind
SECONDS_PER_CASE = 30


class Hung(Exception):
    pass


def run_case(capsys, argv):
    """(exit code, stdout, stderr) of the CLI, failing a case that takes longer than SECONDS_PER_CASE."""
    def alarm(signum, frame):
        raise Hung(f"{argv} ran for more than {SECONDS_PER_CASE} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(SECONDS_PER_CASE)
    try:
        code = cli.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capsys.readouterr()
    return code, out, err


def mutate(data, rng):
    """data with one random kind of damage: truncated, bytes flipped, bytes dropped or bytes inserted."""
    data = bytearray(data)
    kind = rng.choice(("truncate", "flip", "drop", "insert"))
    where = rng.randrange(len(data))
    if kind == "truncate":
        return bytes(data[:where]), kind
    if kind == "flip":
        for position in rng.sample(range(len(data)), min(len(data), rng.randint(1, 16))):
            data[position] ^= 1 << rng.randrange(8)
        return bytes(data), kind
    count = rng.randint(1, 64)
    if kind == "drop":
        del data[where:where + count]
    else:
        data[where:where] = bytes(rng.randrange(256) for _ in range(count))
    return bytes(data), kind


def assert_clean_end(code, err, context):
    assert code in (0, 2), f"{context}: exit {code}: {err}"
    assert "Traceback" not in err, f"{context}: {err}"
    if code == 2:
        assert len(err.strip().splitlines()) == 1, f"{context}: {err}"


@pytest.fixture(scope="module")
def originals(trained_run):
    run_dir = trained_run[0]
    return {"checkpoint": open(os.path.join(run_dir, "best.pdckpt"), "rb").read(),
            "test_error": json.load(open(os.path.join(run_dir, "summary.json")))["test_error"]}


def test_damaged_checkpoints(originals, tmp_path, capsys):
    rng = random.Random(11)
    path = tmp_path / "damaged.pdckpt"
    outcomes = {0: 0, 2: 0}
    for case in range(CASES):
        data, kind = mutate(originals["checkpoint"], rng)
        path.write_bytes(data)
        code, out, err = run_case(capsys, ["--mode", "eval", "--checkpoint", str(path)])
        assert_clean_end(code, err, f"case {case} ({kind})")
        if code == 0:  # only bytes the digest does not cover, such as zip timestamps, may change and still load
            assert read_json(tmp_path / "damaged.test.json")["error"] == originals["test_error"]
        outcomes[code] += 1
    assert outcomes[2] > CASES // 2, outcomes


def swapped_members(archive_bytes, rng):
    """The archive with two members' contents swapped: a valid archive of other data."""
    with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as source:
        members = [(member, source.extractfile(member).read()) for member in source.getmembers()]
    first, second = rng.sample(range(len(members)), 2)
    members[first], members[second] = (members[first][0], members[second][1]), (members[second][0], members[first][1])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as target:
        for member, content in members:
            member.size = len(content)
            target.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


@pytest.mark.slow
def test_damaged_archives(trained_run, tmp_path, capsys):
    rng = random.Random(12)
    archive = write_archive(str(tmp_path / "source.tar.gz"), synthetic_batches(40, learnable=True))
    original = Path(archive).read_bytes()
    checkpoint = tmp_path / "best.pdckpt"
    shutil.copy(os.path.join(trained_run[0], "best.pdckpt"), checkpoint)
    path = tmp_path / "damaged.tar.gz"
    for case in range(CASES):
        if case % 10 == 0:
            data, kind = swapped_members(original, rng), "swapped members"
        else:
            data, kind = mutate(original, rng)
        path.write_bytes(data)
        code, _, err = run_case(capsys, ["--mode", "eval", "--checkpoint", str(checkpoint), "--data-file", str(path)])
        assert_clean_end(code, err, f"case {case} ({kind})")


def test_damaged_configs(tmp_path, capsys):
    rng = random.Random(13)
    original = Path(ROOT, "configs", "resnet110_sd.yaml").read_bytes()
    path = tmp_path / "damaged.yaml"
    for case in range(CASES):
        data, kind = mutate(original, rng)
        path.write_bytes(data)
        code, _, err = run_case(capsys, ["--config", str(path), "--print-config"])
        assert_clean_end(code, err, f"case {case} ({kind}): {data[:200]!r}")


@contextlib.contextmanager
def memory_cap(extra_bytes):
    """A soft address-space limit of what this process uses now plus extra_bytes (as ulimit -v), lifted after."""
    with open("/proc/self/status") as stream:
        used = int(stream.read().split("VmSize:")[1].split()[0]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


ODD_VALUES = (None, True, -5, 0, 2**40, 10**30, 1.5, float("nan"), "10", "", "x" * 1000, [], [1, 2, 3], {},
              {"a": {"b": [None]}})


def crafted_state(state, rng):
    """state with one field, top-level or in its config, given an odd value: a crafted file, re-sealed with a valid
    digest, as anyone can make one."""
    state = copy.deepcopy(state)
    if rng.random() < 0.5:
        key = rng.choice(sorted(state))
        state[key] = rng.choice(ODD_VALUES)
        return state, key
    section = rng.choice(sorted(state["config"]))
    key = rng.choice(sorted(state["config"][section]))
    state["config"][section][key] = rng.choice(ODD_VALUES)
    return state, f"config.{section}.{key}"


@pytest.mark.slow
def test_crafted_checkpoints_within_a_memory_cap(originals, trained_run, tmp_path, capsys):
    from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint

    rng = random.Random(14)
    state = read_checkpoint(os.path.join(trained_run[0], "best.pdckpt"))
    path = str(tmp_path / "crafted.pdckpt")
    (tmp_path / "export").mkdir()
    with memory_cap(2 << 30):
        for case in range(CASES // 2):
            crafted, field = crafted_state(state, rng)
            save_checkpoint(path, crafted)
            commands = [["eval", "--checkpoint", path], ["export", "--checkpoint", path, "--export-prefix",
                                                           str(tmp_path / "export" / "model")]]
            for argv in commands + ([["--resume", path]] if case % 3 == 0 else []):
                code, _, err = run_case(capsys, argv)
                assert_clean_end(code, err, f"case {case} ({field}, {argv[0]})")
