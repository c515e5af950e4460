"""Labelled evaluation sets on disk: which layout a folder has, and its images with their labels.

Two layouts are recognised, both one folder per class:

- WordNet ids (``n01440764/``, ...): ImageNet-1k val after the usual preparation, ImageNet-Sketch,
  ImageNet-R and ImageNet-A (the last two hold 200 of the 1000 classes);
- class indices (``0/`` ... ``999/``): ImageNet-V2.

A folder's class is a model output index, through the WordNet ids shipped with the package
(``data/imagenet_synsets.txt``, in the order of the models' outputs). Empty class folders count as
classes present: a subset of classes restricts the logits (:mod:`wsl_images.evaluation`).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Literal

from ..errors import InvalidInputError
from ..inference import image_extensions

__all__ = ["EvalSet", "Layout", "imagenet_wnids", "sample", "scan"]

Layout = Literal["wordnet", "index"]

_INDEX_NAME = re.compile(r"0|[1-9][0-9]{0,2}")  # 0 ... 999, as ImageNet-V2 names them
_WNID_SHAPE = re.compile(r"n[0-9]{8}")
_RECOGNISED = (
    "Recognised layouts: one folder per class named by WordNet id (n01440764/, n01443537/, ...: "
    "ImageNet-1k val, ImageNet-Sketch, ImageNet-R, ImageNet-A; any subset of the 1000 classes), "
    "or by class index (0/ ... 999/: ImageNet-V2)."
)


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids, position i = model output i."""
    text = resources.files("wsl_images").joinpath("data/imagenet_synsets.txt").read_text("utf-8")
    rows = [line.split("\t", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    return tuple(rows)


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


@dataclass(frozen=True)
class EvalSet:
    """Images with labels, in a deterministic order (class by class, paths sorted)."""

    root: Path
    layout: Layout
    folders: dict[int, str]  # model output index -> its class folder's name, ascending index
    files: tuple[Path, ...]
    labels: tuple[int, ...]  # model output index of each file's class
    skipped: int  # files in class folders whose extension is not an image format's

    @property
    def classes(self) -> tuple[int, ...]:
        """Model output indices of the classes present (empty folders included), ascending."""
        return tuple(self.folders)


def scan(data: str | os.PathLike[str]) -> EvalSet:
    """The evaluation set in folder ``data``; ``InvalidInputError`` if its layout is unknown."""
    root = Path(data)
    if not root.is_dir():
        msg = f"Data folder {str(root)!r} does not exist or is not a folder. {_RECOGNISED}"
        raise InvalidInputError(msg)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    dirs = [p for p in entries if p.is_dir()]
    exts = image_extensions()
    loose = [p.name for p in entries if p.is_file() and p.suffix.lower() in exts]
    layout, classes = _classify(root, [d.name for d in dirs], loose)
    folders = dict(sorted(zip(classes, (d.name for d in dirs), strict=True)))
    files: list[Path] = []
    labels: list[int] = []
    skipped = 0
    for index, name in folders.items():
        found = sorted(f for f in (root / name).rglob("*") if f.is_file())
        images = [f for f in found if f.suffix.lower() in exts]
        skipped += len(found) - len(images)
        files += images
        labels += [index] * len(images)
    if not files:
        msg = (
            f"Data folder {str(root)!r} has {len(folders)} class folders but no image files in "
            "them: put each class's images in its folder."
        )
        raise InvalidInputError(msg)
    return EvalSet(root, layout, folders, tuple(files), tuple(labels), skipped)


def _classify(root: Path, names: list[str], loose: list[str]) -> tuple[Layout, list[int]]:
    """The layout of class folders ``names`` and each folder's model output index."""
    wnids = _wnid_index()
    by_wnid = [n for n in names if n in wnids]
    by_index = [n for n in names if _INDEX_NAME.fullmatch(n)]
    other = [n for n in names if n not in wnids and not _INDEX_NAME.fullmatch(n)]
    problem = None
    if not names:
        problem = "it holds no class folders"
    elif other:
        problem = _unknown(other)
    elif by_wnid and by_index:
        problem = (
            f"it mixes {len(by_wnid)} WordNet-id folders ({_examples(by_wnid)}) with "
            f"{len(by_index)} class-index folders ({_examples(by_index)})"
        )
    if loose:
        where = f"{len(loose)} image files directly in it ({_examples(loose)}), outside any class"
        problem = where if problem is None else f"{problem}, and {where}"
    if problem is not None:
        msg = f"Data folder {str(root)!r} has no recognised layout: {problem}. {_RECOGNISED}"
        raise InvalidInputError(msg)
    if by_wnid:
        return "wordnet", [wnids[n] for n in names]
    return "index", [int(n) for n in names]


def _unknown(names: list[str]) -> str:
    shaped = [n for n in names if _WNID_SHAPE.fullmatch(n)]
    if len(shaped) == len(names):
        return (
            f"{len(names)} folders are named like WordNet ids but are not among the 1000 "
            f"ImageNet-1k classes ({_examples(names)})"
        )
    return f"{len(names)} folders are neither WordNet ids nor 0-999 ({_examples(names)})"


def _examples(names: list[str], shown: int = 5) -> str:
    quoted = ", ".join(repr(n) for n in names[:shown])
    return quoted + (f" and {len(names) - shown} more" if len(names) > shown else "")


def sample(evalset: EvalSet, limit: int | None) -> EvalSet:
    """At most ``limit`` images, spread across classes: the first image of every class, then
    the second of every class, and so on (deterministic); the set itself when it is smaller."""
    if limit is None or limit >= len(evalset.files):
        return evalset
    if limit < 1:
        msg = f"limit must be at least 1 image, got {limit!r}."
        raise InvalidInputError(msg)
    per_class: dict[int, list[int]] = {}
    for position, label in enumerate(evalset.labels):
        per_class.setdefault(label, []).append(position)
    queues = list(per_class.values())
    picked: list[int] = []
    rank = 0
    while len(picked) < limit:
        picked += [q[rank] for q in queues if rank < len(q)][: limit - len(picked)]
        rank += 1
    picked.sort()
    files = tuple(evalset.files[p] for p in picked)
    return replace(evalset, files=files, labels=tuple(evalset.labels[p] for p in picked))
