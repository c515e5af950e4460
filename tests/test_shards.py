"""ShardSink: whole shards only, the .npy before the .jsonl, nothing left by an unfinished one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from wsl_images._util import TempFile
from wsl_images.inference import Outcome, Prediction
from wsl_images.jobs import _shards as shards
from wsl_images.jobs._shards import ShardSink

INPUTS = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names ShardSink publishes, in the order they appear."""
    names: list[str] = []
    real = shards.atomic_file

    @contextlib.contextmanager
    def recording(target: str | os.PathLike[str], **kwargs: bool) -> Iterator[TempFile]:
        with real(target, **kwargs) as tmp:
            yield tmp
        names.append(Path(target).name)

    monkeypatch.setattr(shards, "atomic_file", recording)
    return names


def _prediction(i: int) -> Outcome[Prediction]:
    return Outcome(i, Prediction([f"label{i}"], [i], [0.5]))


def test_classify_shards_appear_when_their_last_line_is_written(
    tmp_path: Path, published: list[str]
) -> None:
    with ShardSink(tmp_path, INPUTS, shard_size=2, width=None) as sink:
        sink.write(_prediction(0))
        assert os.listdir(tmp_path) != [] and published == []  # only the temp file so far
        sink.write(Outcome(1, None, "empty file"))
        assert published == ["shard-000000.jsonl"]
        for i in (2, 3, 4):
            sink.write(_prediction(i))
    assert published == ["shard-000000.jsonl", "shard-000001.jsonl", "shard-000002.jsonl"]
    assert sorted(os.listdir(tmp_path)) == published and (sink.failed, sink.written) == (1, 3)
    lines = [json.loads(x) for x in (tmp_path / "shard-000000.jsonl").read_text().splitlines()]
    assert lines == [
        {"path": "a.jpg", "predictions": [{"label": "label0", "index": 0, "probability": 0.5}]},
        {"path": "b.jpg", "error": "empty file"},
    ]


def test_embed_rows_go_to_the_npy_published_before_the_jsonl(
    tmp_path: Path, published: list[str]
) -> None:
    rows = {i: torch.full((3,), float(i)) for i in (0, 2, 3)}
    with ShardSink(tmp_path, INPUTS[:4], shard_size=4, width=3) as sink:
        for i in range(4):
            sink.write(Outcome(i, rows.get(i), None if i in rows else "bad"))
    assert published == ["shard-000000.npy", "shard-000000.jsonl"]
    np.testing.assert_array_equal(
        np.load(tmp_path / "shard-000000.npy"), [[0.0] * 3, [2.0] * 3, [3.0] * 3]
    )
    lines = [json.loads(x) for x in (tmp_path / "shard-000000.jsonl").read_text().splitlines()]
    assert [x.get("row") for x in lines] == [0, None, 1, 2] and lines[1]["error"] == "bad"


@pytest.mark.parametrize("width", [None, 3])
def test_an_unfinished_shard_leaves_nothing(
    tmp_path: Path, published: list[str], width: int | None
) -> None:
    value = torch.zeros(3) if width else Prediction(["x"], [0], [1.0])
    with (
        pytest.raises(KeyboardInterrupt),
        ShardSink(tmp_path, INPUTS, shard_size=2, width=width) as sink,
    ):
        for i in range(3):
            sink.write(Outcome(i, value))
        raise KeyboardInterrupt
    first = ["shard-000000.jsonl"] if width is None else ["shard-000000.npy", "shard-000000.jsonl"]
    assert published == first and sorted(os.listdir(tmp_path)) == sorted(first)
    # Outcomes that simply stop mid-shard are discarded the same way.
    second = tmp_path / "second"
    second.mkdir()
    with ShardSink(second, INPUTS, shard_size=5, width=width) as sink:
        sink.write(Outcome(0, value))
    assert published == first and os.listdir(second) == []
