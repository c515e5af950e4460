"""``--output-dir``: shards equal to the single-file output, resume after SIGKILL, refusals."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import random_state_dict, save_hashed
from imagegen import write_dataset
from server import FileServer

import wsl_images
from wsl_images.cli import main
from wsl_images.errors import InvalidInputError

Served = tuple[FileServer, dict[str, Path]]
IMAGES, SHARD = 200, 16
INPUTS = 4 + IMAGES + 6 + 2  # bad files, photos, tar members, --files-from lines
SHARDS, FAILED = -(-INPUTS // SHARD), 4 + 2 + 1  # bad files, corrupt members, missing file


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    bad = write_dataset(root / "folder", IMAGES)
    first = root / "folder" / "photos" / "00" / "00000.jpg"
    (root / "list.txt").write_text(f"{first}\n\n{bad['missing']}\n")
    return root


def _args(command: str, checkpoint: Path, data: Path, *extra: str) -> list[str]:
    common = ["--model", "resnet18_ssl", "--checkpoint", str(checkpoint), "--batch-size", "8"]
    common += ["--device", "cpu"]
    common += ["--workers", "1", "--no-progress", "--files-from", str(data / "list.txt")]
    return [command, *common, str(data / "folder"), *extra]


@dataclass
class Killed:
    """A sharded classify killed with SIGKILL once 3 shards existed, then run again."""

    out: Path  # ref.jsonl (the single-file output of the same inputs) and classify/
    at_kill: dict[str, tuple[int, int, bytes]]  # name: inode, mtime, content
    complete: list[str]  # the shards complete at the kill
    code: int  # of the rerun
    err: str  # its stderr


@pytest.fixture(scope="module")
def killed(served: Served, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """The single-file output, and the same inputs sharded by a run killed and resumed."""
    out, checkpoint = tmp_path_factory.mktemp("runs"), served[1]["zip"]
    ref = _args("classify", checkpoint, data, "--format", "jsonl", "-o", f"{out}/ref.jsonl")
    assert main(ref) == 1
    argv = _args("classify", checkpoint, data, "--output-dir", f"{out}/classify")
    argv += ["--shard-size", str(SHARD)]
    _kill_after_shards(argv, out / "classify", 3)
    at_kill = _snapshot(out / "classify")
    complete = [n for n in at_kill if n.startswith("shard-")]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    return Killed(out, at_kill, complete, code, err.getvalue())


@pytest.fixture(scope="module")
def runs(killed: Killed) -> Path:
    return killed.out


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()
    }


def _kill_after_shards(argv: list[str], folder: Path, count: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "wsl_images", *argv])
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(folder.glob("shard-*.jsonl"))) >= count:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
    proc.wait()


def _shard_lines(folder: Path) -> list[dict[str, object]]:
    files = sorted(folder.glob("shard-*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_killed_run_resumes_to_the_output_of_an_uninterrupted_run(killed: Killed) -> None:
    runs = killed.out
    folder = runs / "classify"
    assert 3 <= len(killed.complete) < SHARDS and "_SUCCESS" not in killed.at_kill
    assert killed.code == 1
    done = f"resumed: {len(killed.complete)} of {SHARDS} shards were complete already"
    assert done in killed.err and f"{FAILED} of {INPUTS} inputs failed" in killed.err
    after = _snapshot(folder)
    for name in killed.complete:  # complete shards were kept as they were, not written again
        assert after[name] == killed.at_kill[name], f"{name} was rewritten"
    shards = [f"shard-{k:06d}.jsonl" for k in range(SHARDS)]
    names = sorted([*shards, "_SUCCESS", "inputs-index.npy", "inputs.jsonl", "run.json"])
    assert sorted(after) == names  # the killed run's temp file was removed too
    ref = (runs / "ref.jsonl").read_text().splitlines()
    assert [line for s in shards for line in (folder / s).read_text().splitlines()] == ref


def test_classify_shards_record_the_run_and_every_error(runs: Path, data: Path) -> None:
    folder = runs / "classify"
    assert len((folder / "shard-000000.jsonl").read_text().splitlines()) == SHARD
    assert json.loads((folder / "_SUCCESS").read_text()) == {
        "inputs": INPUTS,
        "failed": FAILED,
        "shards": SHARDS,
    }
    spec = json.loads((folder / "run.json").read_text())
    assert spec["model"] == "resnet18_ssl" and spec["options"] == {
        "dtype": "float32",
        "engine": "torch",
        "top_k": 5,
        "classes": 1000,
        "labels": "imagenet",
    }
    assert (spec["inputs"], spec["shard_size"], spec["command"]) == (INPUTS, SHARD, "classify")
    assert len(spec["checkpoint_sha256"]) == 64 and len(spec["input_fingerprint"]) == 64
    errors = {Path(r["path"]).name: r["error"] for r in _shard_lines(folder) if "error" in r}
    bad = ["bomb.png", "empty.jpg", "notes.png", "truncated.jpg", "missing.jpg"]
    assert sorted(errors) == sorted([*bad, "corrupt-empty.jpg", "corrupt-cut.jpg"])
    assert (
        errors["corrupt-empty.jpg"] == errors["empty.jpg"] == "empty file (0 bytes), not an image"
    )
    assert errors["corrupt-cut.jpg"] == errors["truncated.jpg"]
    tar = str(data / "folder" / "web-000000.tar")
    members = [r["path"] for r in _shard_lines(folder) if str(r["path"]).startswith(tar + "/")]
    assert [Path(str(m)).name for m in members] == [
        f"{IMAGES:06d}.jpg",
        "corrupt-empty.jpg",
        "corrupt-cut.jpg",
        *(f"{IMAGES + i:06d}.jpg" for i in (1, 2, 3)),
    ]


def test_a_stale_listing_of_the_folder_does_not_fail_the_run(
    runs: Path, served: Served, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An NFS client's listing of a folder can miss files other nodes renamed into it (its
    cached listing): the final check trusts the shards this run published and looks the others
    up by name, so the run still ends with _SUCCESS."""
    folder = tmp_path / "classify"
    shutil.copytree(runs / "classify", folder)
    for name in ("_SUCCESS", "shard-000002.jsonl"):  # a run that stopped before shard 2
        (folder / name).unlink()
    hidden = {"shard-000002.jsonl", "shard-000005.jsonl"}  # never in a listing
    listdir = os.listdir
    stale = lambda path=".": [n for n in listdir(path) if n not in hidden]  # noqa: E731
    monkeypatch.setattr(os, "listdir", stale)
    argv = _args("classify", served[1]["zip"], data, "--output-dir", str(folder))
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main([*argv, "--shard-size", str(SHARD)]) == 1  # the failed inputs
    assert f"resumed: {SHARDS - 2} of {SHARDS} shards were complete already" in err.getvalue()
    monkeypatch.undo()
    for name in sorted(os.listdir(runs / "classify")):
        assert (folder / name).read_bytes() == (runs / "classify" / name).read_bytes(), name


def test_read_results_yields_every_input_in_order(runs: Path) -> None:
    ref = [json.loads(line) for line in (runs / "ref.jsonl").read_text().splitlines()]
    rows = list(wsl_images.read_results(runs / "classify"))
    assert [r.index for r in rows] == list(range(INPUTS))
    assert [r.path for r in rows] == [r["path"] for r in ref]
    assert [r.predictions for r in rows] == [r.get("predictions") for r in ref]
    assert [r.error for r in rows] == [r.get("error") for r in ref]
    assert all(r.embedding is None and r.row is None for r in rows)


def test_result_paths_given_again_are_the_same_inputs(runs: Path) -> None:
    """A row's path, tar members' included, read back as an input is the input it came from."""
    from wsl_images.inference import TarMember, iter_inputs
    from wsl_images.jobs._listing import Listing

    rows = list(wsl_images.read_results(runs / "classify"))
    listing = list(Listing(runs / "classify", count=INPUTS, shard_size=SHARD))
    again = list(iter_inputs(r.path for r in rows))
    assert sum(isinstance(e, TarMember) and e.error is None for e in listing) == 6
    assert again == listing


def test_embed_shards_hold_the_single_file_rows(
    served: Served, data: Path, tmp_path: Path, start_method: str
) -> None:
    folder = data / "folder"
    small = tmp_path / "small.txt"
    photos = sorted((folder / "photos" / "00").iterdir())[:9]
    small.write_text("\n".join(map(str, [folder / "bad", *photos, folder / "web-000000.tar"])))
    common = ["--model", "resnet18_ssl", "--checkpoint", str(served[1]["zip"]), "--no-progress"]
    common += ["--device", "cpu"]
    common += ["--batch-size", "4", "--files-from", str(small), "--workers", "1"]
    assert main(["embed", *common, "-o", str(tmp_path / "ref.npy")]) == 1
    out = tmp_path / "embed"
    assert main(["embed", *common, "--output-dir", str(out), "--shard-size", "4"]) == 1
    ref = np.load(tmp_path / "ref.npy")
    index = [json.loads(line) for line in (tmp_path / "ref.jsonl").read_text().splitlines()]
    lines = _shard_lines(out)
    assert [r["path"] for r in lines] == [r["path"] for r in index] and len(lines) == 19
    good = [i for i, r in enumerate(lines) if "error" not in r]
    assert len(good) == 19 - 4 - 2
    for k in range(5):
        rows = np.load(out / f"shard-{k:06d}.npy")
        in_shard = [i for i in good if i // 4 == k]
        assert rows.dtype == np.float32 and rows.shape == (len(in_shard), 512)
        np.testing.assert_array_equal(rows, ref[in_shard])
        assert [lines[i]["row"] for i in in_shard] == list(range(len(in_shard)))
    matrix = wsl_images.read_embeddings(out)
    assert matrix.shape == (len(good), 512) and len(matrix.parts) == 5
    np.testing.assert_array_equal(np.asarray(matrix), ref[good])
    np.testing.assert_array_equal(matrix[1:12:3], ref[good][1:12:3])
    np.testing.assert_array_equal(matrix[-1], ref[good][-1])
    rows_read = list(wsl_images.read_results(out))
    assert [r.path for r in rows_read] == [r["path"] for r in lines]
    for row in rows_read:
        assert (row.embedding is None) == (row.error is not None) == (row.row is None)
        if row.embedding is not None:
            np.testing.assert_array_equal(row.embedding, ref[good[row.row]])


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state: dict[str, torch.Tensor] = random_state_dict("resnet18_ssl", seed=1)
    return save_hashed(state, tmp_path_factory.mktemp("other"), "other", legacy=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--top-k", "3"], "top_k 5 there, 3 now"),
        (["--dtype", "bfloat16"], "dtype 'float32' there, 'bfloat16' now"),
        (["--shard-size", "8"], "shard_size 16 there, 8 now"),
        (["--model", "resnet18_swsl"], "model 'resnet18_ssl' there, 'resnet18_swsl' now"),
        (["--checkpoint", "OTHER"], "checkpoint sha256"),
        (["--files-from", "EMPTY"], f"input list of {INPUTS} (sha256"),
        (["embed"], "command 'classify' there, 'embed' now"),
        (["--labels", "LABELS"], "labels 'imagenet' there, 'sha256:"),
    ],
)
def test_a_different_run_is_refused_and_changes_nothing(
    served: Served,
    data: Path,
    runs: Path,
    other_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: list[str],
    message: str,
) -> None:
    folder = runs / "classify"
    before = _snapshot(folder)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(1000)))
    argv = _args("classify", served[1]["zip"], data, "--output-dir", str(folder))
    argv += ["--shard-size", str(SHARD)]
    if change == ["embed"]:
        argv[0] = "embed"
    else:
        swap = {"OTHER": str(other_checkpoint), "EMPTY": str(tmp_path / "empty.txt")}
        swap["LABELS"] = str(tmp_path / "labels.txt")
        argv += [swap.get(c, c) for c in change]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "--overwrite to start over" in err
    assert _snapshot(folder) == before


def test_overwrite_starts_over(served: Served, data: Path, runs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "classify"
    shutil.copytree(runs / "classify", folder)
    (folder / "notes.md").write_text("mine")
    one = data / "folder" / "photos" / "00" / "00001.jpg"
    argv = ["classify", "--model", "resnet18_ssl", "--checkpoint", str(served[1]["zip"])]
    argv += ["--device", "cpu"]
    argv += ["--no-progress", "--top-k", "2", "--output-dir", str(folder), str(one)]
    assert main(argv) == 2  # another run's folder: refused without --overwrite
    assert main([*argv, "--overwrite"]) == 0
    names = sorted(p.name for p in folder.iterdir())
    ours = ["_SUCCESS", "inputs-index.npy", "inputs.jsonl", "notes.md", "run.json"]
    assert names == [*ours, "shard-000000.jsonl"]
    (row,) = wsl_images.read_results(folder)
    assert row.path == str(one) and row.predictions is not None and len(row.predictions) == 2
    assert json.loads((folder / "run.json").read_text())["inputs"] == 1


def test_folders_that_cannot_hold_a_run_are_refused(
    served: Served, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = data / "folder" / "photos" / "00" / "00001.jpg"

    def run(folder: Path, *extra: str) -> str:
        argv = ["classify", "--model", "resnet18_ssl", "--checkpoint", str(served[1]["zip"])]
        argv += ["--device", "cpu"]
        assert main([*argv, "--no-progress", "--output-dir", str(folder), *extra, str(one)]) == 2
        return capsys.readouterr().err

    a_file = tmp_path / "results"
    a_file.write_text("precious")
    assert "is a file, not a folder" in run(a_file)
    assert "cannot be created" in run(a_file / "sub")
    assert a_file.read_text() == "precious"
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "shard-000000.jsonl").write_text("precious")
    assert "holds 'shard-000000.jsonl' but no run.json" in run(stray)
    assert sorted(os.listdir(stray)) == ["shard-000000.jsonl"]
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "run.json").write_text("{not json")
    assert "is not a wsl-images run record" in run(garbled)
    assert (garbled / "run.json").read_text() == "{not json"
    # Root writes anywhere, and Windows ignores a folder's mode: shown where permissions apply.
    if os.name == "posix" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "is not writable" in run(locked)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "x.jsonl"], "--output and --output-dir exclude each other"),
        (["--format", "csv"], "--output-dir always writes jsonl shards"),
        (["--files-from", "/nonexistent/list.txt"], "--files-from '/nonexistent/list.txt' is not"),
    ],
)
def test_usage_errors_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["classify", "--model", "resnet18_ssl", "--output-dir", str(tmp_path / "out"), "x.jpg"]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_shard_options_need_output_dir_and_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--shard-size", "4", "x.jpg"]) == 2
    assert "--shard-size applies to --output-dir DIR only" in capsys.readouterr().err
    assert main(["embed", "--overwrite", "x.jpg"]) == 2
    assert "--overwrite applies to --output-dir DIR only" in capsys.readouterr().err
    assert main(["classify", "--output-dir", "out"]) == 2
    assert "No inputs: give image files" in capsys.readouterr().err


def test_reading_an_unfinished_run(runs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "classify"
    shutil.copytree(runs / "classify", folder)
    (folder / "shard-000002.jsonl").unlink()
    with pytest.raises(InvalidInputError, match=rf"1 of {SHARDS} shards are missing \(first: 2\)"):
        list(wsl_images.read_results(folder))
    rows = list(wsl_images.read_results(folder, partial=True))
    assert len(rows) == INPUTS - SHARD
    assert [r.index for r in rows] == [i for i in range(INPUTS) if i // SHARD != 2]
    with pytest.raises(InvalidInputError, match="needs an embed run"):
        wsl_images.read_embeddings(runs / "classify")
    with pytest.raises(InvalidInputError, match=r"no run\.json"):
        list(wsl_images.read_results(tmp_path))
