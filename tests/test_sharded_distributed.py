"""``--output-dir`` under torchrun (2 CPU processes, gloo): the single-process shards, each
written once by one rank, and a fixed number of collectives whatever the number of inputs; also
beside a caller's NCCL-only group, through slow phases and a stale listing (simulated)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from imagegen import write_dataset
from launch import torchrun
from server import FileServer

from wsl_images.cli import main

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]
INPUTS, SHARDS = 4 + 30 + 6, 5  # bad files, photos, tar members; shards of 8


def _torchrun(
    probe: Path, args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    probe.mkdir()
    proc = torchrun([str(REPO / "tests" / "dist_probe.py"), str(probe), *args], env=env)
    ranks = [json.loads(p.read_text()) for p in sorted(probe.glob("rank*.json"))]
    assert len(ranks) == 2, proc.stderr[-4000:]
    return proc, ranks


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    write_dataset(root, 30)
    return root


@pytest.fixture(scope="module")
def one(served: Served, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a one-process run (in this process): the reference."""
    folder = tmp_path_factory.mktemp("one") / "run"
    assert main(_args(served, folder, data)) == 1
    return folder


def _args(served: Served, folder: Path, *inputs: Path) -> list[str]:
    args = ["classify", "--model", "resnet18_ssl", "--checkpoint", str(served[1]["zip"])]
    args += ["--batch-size", "4", "--workers", "1", "--no-progress", "--shard-size", "8"]
    args += ["--device", "cpu"]
    return [*args, "--output-dir", str(folder), *map(str, inputs)]


def _same_files(folder: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == names
    for name in names:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def test_two_ranks_write_the_one_process_shards_and_exchange_no_results(
    served: Served, data: Path, one: Path, tmp_path: Path
) -> None:
    assert json.loads((one / "_SUCCESS").read_text())["failed"] == 6

    proc, fresh = _torchrun(tmp_path / "probe-fresh", _args(served, tmp_path / "two", data))
    assert proc.returncode == 1 and f"6 of {INPUTS} inputs failed" in proc.stderr, proc.stderr
    _same_files(tmp_path / "two", one)
    # Shard k by rank k mod 2, once; nobody wrote another rank's shard.
    assert [r["written"] for r in fresh] == [
        ["shard-000000.jsonl", "shard-000002.jsonl", "shard-000004.jsonl"],
        ["shard-000001.jsonl", "shard-000003.jsonl"],
    ]

    # A one-process run that lost shards 1 and 4 (killed, say), resumed on 2 ranks.
    resumed = tmp_path / "resumed"
    shutil.copytree(one, resumed)
    for name in ("shard-000001.jsonl", "shard-000004.jsonl", "_SUCCESS"):
        (resumed / name).unlink()
    proc, again = _torchrun(tmp_path / "probe-resumed", _args(served, resumed, data))
    assert proc.returncode == 1 and "resumed: 3 of 5 shards" in proc.stderr, proc.stderr
    assert [r["written"] for r in again] == [["shard-000001.jsonl"], ["shard-000004.jsonl"]]
    _same_files(resumed, one)

    # One input: one shard, rank 1 idle. The same collectives as for 40 inputs (or 16).
    single = data / "photos" / "00" / "00003.jpg"
    proc, tiny = _torchrun(tmp_path / "probe-tiny", _args(served, tmp_path / "tiny", single))
    assert proc.returncode == 0, proc.stderr
    assert [r["written"] for r in tiny] == [["shard-000000.jsonl"], []]
    for rank in (0, 1):
        counts = fresh[rank]["collectives"]
        assert counts == again[rank]["collectives"] == tiny[rank]["collectives"]
        # The verdict on the folder and the plan, the model-loading barrier, one gather of
        # each rank's failed inputs and completed shards, the barrier before leaving the group.
        expected = {"broadcast_object_list": 2, "barrier": 2, "all_gather_object": 1}
        assert counts == expected, counts


def test_beside_a_callers_nccl_group_through_slow_phases_and_a_stale_listing(
    served: Served, data: Path, one: Path, tmp_path: Path
) -> None:
    """The caller made the process group: NCCL-only (no CPU collectives, simulated) with a 2 s
    timeout. Rank 0 lists the inputs and local rank 0 loads the model for 3x longer than that,
    and rank 0's listings of the folder miss the shards rank 1 renamed into it (as an NFS
    client's cached listing can). The run completes, with the one-process shards and _SUCCESS."""
    simulated = {"SIM_PG_TIMEOUT": "2", "SIM_NCCL_ONLY": "1"}
    simulated |= {"SIM_SLOW_LISTING": "6", "SIM_SLOW_BUILD": "6"}
    simulated |= {"SIM_HIDE": "shard-000001.jsonl,shard-000003.jsonl"}
    folder = tmp_path / "two"
    proc, ranks = _torchrun(tmp_path / "probe", _args(served, folder, data), simulated)
    assert proc.returncode == 1 and f"6 of {INPUTS} inputs failed" in proc.stderr, proc.stderr
    assert [r["code"] for r in ranks] == [1, 0]  # rank 0 reports the run; the other exits 0
    assert ranks[1]["written"] == ["shard-000001.jsonl", "shard-000003.jsonl"]
    _same_files(folder, one)  # _SUCCESS included
