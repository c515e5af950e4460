"""evaluate and ``wsl-images evaluate``: the numbers of an independent reference loop, on every
layout, with class subsets, unreadable images and bad folders."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from evalsets import (
    Labelled,
    file_under,
    label_by_outcome,
    reference_logits,
    reference_scores,
    write_photos,
)
from PIL import Image
from server import FileServer

from wsl_images import evaluate
from wsl_images.cli import main
from wsl_images.evaluation import imagenet_wnids
from wsl_images.inference import load_image, make_loader
from wsl_images.zoo import geometry as geometry_of
from wsl_images.zoo import get_weights

Served = tuple[FileServer, dict[str, Path]]
Pool = tuple[list[Path], torch.Tensor]
SUBSET = list(range(3, 1000, 5))  # 200 classes, as ImageNet-R/A hold


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, state18: dict[str, torch.Tensor]) -> Pool:
    paths = write_photos(tmp_path_factory.mktemp("pool"), 36)
    return paths, reference_logits(state18, paths)


@pytest.fixture(scope="module")
def labelled(pool: Pool) -> Labelled:
    chosen = label_by_outcome(pool[1])
    assert set(chosen.outcome) == {"top1", "top5", "wrong"} and len(chosen.photos) >= 24
    return chosen


def _url(served: Served) -> str:
    server, files = served
    return f"{server.url}/{files['zip'].name}"


def _expected(pool: Pool, chosen: Labelled, classes: list[int] | None = None) -> tuple[float, ...]:
    return reference_scores(pool[1][chosen.photos], chosen.labels, classes)


def test_wordnet_folders_give_the_reference_numbers(
    served: Served, pool: Pool, labelled: Labelled, tmp_path: Path
) -> None:
    file_under(tmp_path / "val", dict(enumerate(imagenet_wnids())), pool[0], labelled)
    result = evaluate(
        "resnet18_ssl", tmp_path / "val", checkpoint_path=_url(served), batch_size=8, workers=0,
        device="cpu",
    )  # fmt: skip
    n = len(labelled.photos)
    assert (result.top1, result.top5) == _expected(pool, labelled)
    assert result.top1 == 100 * labelled.outcome.count("top1") / n  # the known fractions
    assert result.top5 == 100 * (n - labelled.outcome.count("wrong")) / n
    assert (result.count, result.failed, result.failures, result.skipped) == (n, 0, [], 0)
    assert result.layout == "wordnet" and result.model == "resnet18_ssl"
    assert result.classes_used == list(range(1000)) and not result.restricted
    assert (result.dtype, result.device) == ("float32", "cpu")
    assert [c.index for c in result.per_class] == list(range(1000))
    per_label = Counter(labelled.labels)
    assert {c.index: c.count for c in result.per_class if c.count} == dict(per_label)
    assert all(c.top1 is None and c.top5 is None for c in result.per_class if not c.count)
    tench = result.per_class[0]
    assert (tench.wnid, tench.label) == ("n01440764", "tench")
    for label, kind in zip(labelled.labels, labelled.outcome, strict=True):
        if per_label[label] == 1:  # a class with one image scores that image's outcome
            score = result.per_class[label]
            assert (score.top1, score.top5) == {
                "top1": (100.0, 100.0),
                "top5": (0.0, 100.0),
                "wrong": (0.0, 0.0),
            }[kind]


def test_class_index_folders_give_the_same_numbers(
    served: Served, pool: Pool, labelled: Labelled, tmp_path: Path
) -> None:
    file_under(tmp_path / "v2", {i: str(i) for i in range(1000)}, pool[0], labelled)
    result = evaluate(
        "resnet18_ssl", tmp_path / "v2", checkpoint_path=_url(served), batch_size=5, workers=0,
        device="cpu",
    )  # fmt: skip
    assert result.layout == "index" and result.count == len(labelled.photos)
    assert (result.top1, result.top5) == _expected(pool, labelled)


def test_a_200_class_subset_restricts_the_logits(
    served: Served, pool: Pool, tmp_path: Path
) -> None:
    chosen = label_by_outcome(pool[1], SUBSET)
    wnids = imagenet_wnids()
    file_under(tmp_path / "r", {c: wnids[c] for c in SUBSET}, pool[0], chosen)
    result = evaluate(
        "resnet18_ssl", tmp_path / "r", checkpoint_path=_url(served), batch_size=8, workers=0,
        device="cpu",
    )  # fmt: skip
    assert result.classes_used == SUBSET and result.restricted
    assert len(result.per_class) == 200
    assert (result.top1, result.top5) == _expected(pool, chosen, SUBSET)
    # Over all 1000 logits the same files score differently: the restriction is what counts.
    assert _expected(pool, chosen) != _expected(pool, chosen, SUBSET)


def test_cli_writes_the_result_and_counts_unreadable_images(
    served: Served,
    pool: Pool,
    labelled: Labelled,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    start_method: str,
) -> None:
    data = tmp_path / "val"
    file_under(data, dict(enumerate(imagenet_wnids())), pool[0], labelled)
    bad = data / "n01440764"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.png").write_text("not an image\n")
    (bad / "truncated.jpg").write_bytes(pool[0][0].read_bytes()[:300])
    (bad / "README.txt").write_text("a file that is not an image is skipped, not scored")
    out = tmp_path / "result.json"
    argv = ["evaluate", "resnet18_ssl", "--data", str(data), "--checkpoint", _url(served)]
    argv += ["--batch-size", "8", "--workers", "1", "--no-progress", "--output", str(out)]
    argv += ["--device", "cpu"]
    assert main(argv) == 1  # some images could not be read
    got = json.loads(out.read_text())
    n = len(labelled.photos)
    # Unreadable files are neither dropped silently nor scored as wrong.
    assert (got["top1"], got["top5"]) == _expected(pool, labelled)
    assert (got["count"], got["failed"], got["skipped"]) == (n, 3, 1)
    assert [Path(f["path"]).name for f in got["failures"]] == [
        "empty.jpg",
        "notes.png",
        "truncated.jpg",
    ]
    assert "empty file" in got["failures"][0]["error"]
    assert "not an image file" in got["failures"][1]["error"]
    assert got["restricted"] is False and got["classes_used"] == list(range(1000))
    assert len(got["per_class"]) == 1000 and got["per_class"][0]["wnid"] == "n01440764"
    printed = capsys.readouterr()
    assert f"top-1 {got['top1']:.3f}%  top-5 {got['top5']:.3f}%  on {n} images" in printed.out
    assert "unreadable: 3; non-image files skipped: 1" in printed.out
    assert "72.8/91.5 published, 72.636/91.416 re-measured" in printed.out
    assert "ImageNet-V2 61.470/83.330" in printed.out
    assert "empty.jpg: empty file" in printed.err


def test_limit_evaluates_a_sample(
    served: Served, pool: Pool, labelled: Labelled, tmp_path: Path
) -> None:
    file_under(tmp_path / "val", dict(enumerate(imagenet_wnids())), pool[0], labelled)
    out = tmp_path / "result.json"
    argv = ["evaluate", "resnet18_ssl", "--data", str(tmp_path / "val"), "--limit", "7"]
    argv += ["--checkpoint", _url(served), "--workers", "0", "--no-progress", "-o", str(out)]
    argv += ["--device", "cpu"]
    assert main(argv) == 0
    got = json.loads(out.read_text())
    assert got["count"] == 7 and got["limit"] == 7
    labels = sorted(set(labelled.labels))
    assert [c["index"] for c in got["per_class"] if c["count"]] == labels[:7]  # one per class


def test_bfloat16_autocast_runs_the_same_images(
    served: Served, pool: Pool, labelled: Labelled, tmp_path: Path
) -> None:
    file_under(tmp_path / "val", dict(enumerate(imagenet_wnids())), pool[0], labelled)
    result = evaluate(
        "resnet18_ssl",
        tmp_path / "val",
        checkpoint_path=_url(served),
        dtype="bfloat16",
        limit=6,
        workers=0,
        progress=False,
        device="cpu",
    )
    assert (result.dtype, result.count, result.failed) == ("bfloat16", 6, 0)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda root: None, "does not exist or is not a folder"),
        (lambda root: [(root / n).mkdir(parents=True) for n in ("cats", "dogs")], "'cats'"),
        (lambda root: [(root / n).mkdir(parents=True) for n in ("n01440764", "3")], "mixes"),
    ],
)
def test_bad_layouts_exit_2_before_loading_the_model(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: object,
    says: str,
) -> None:
    server, files = served
    before = server.requests[f"/{files['zip'].name}"]
    root = tmp_path / "data"
    make(root)  # type: ignore[operator]
    argv = ["evaluate", "resnet18_ssl", "--data", str(root), "--checkpoint", _url(served)]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsl-images evaluate: error: ") and says in err
    assert "Recognised layouts" in err and "0/ ... 999/: ImageNet-V2" in err
    assert server.requests[f"/{files['zip'].name}"] == before


def test_evaluation_decodes_jpegs_in_full(tmp_path: Path) -> None:
    # A JPEG big enough for the draft shortcut (both sides >= 1024): classify decodes it at half
    # scale, evaluation in full, as published evaluations do.
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    big = tmp_path / "big.jpg"
    coarse.resize((1600, 1200), Image.Resampling.BICUBIC).save(big, quality=85)
    geometry = geometry_of(get_weights("resnet18_ssl").preprocessing)
    full, drafted = geometry(load_image(big)), geometry(load_image(big, draft=True))
    assert not torch.equal(full, drafted)

    def first(draft: bool) -> torch.Tensor:
        loader = make_loader(
            [big], [0], geometry, batch_size=1, workers=0, pin_memory=False, draft=draft
        )
        images = next(iter(loader)).images
        assert images is not None
        return images[0]

    assert torch.equal(first(draft=False), full)
    assert torch.equal(first(draft=True), drafted)
