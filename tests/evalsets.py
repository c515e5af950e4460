"""Generated evaluation sets, labelled against an independent reference loop.

The reference is the textbook evaluation: PIL full decode, torchvision's classic transforms
(Resize(256), CenterCrop(224), ToTensor, Normalize), a plain torchvision ResNet-18, one image at
a time. Labels are chosen from its logits so that known images are top-1 right, top-5 right only,
or wrong; :func:`reference_scores` recomputes top-1/top-5 from those logits the same plain way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from imagegen import photo
from PIL import Image
from torchvision import transforms

# Logits of the reference and of the pipeline differ by ~1e-4 (resize on PIL vs on tensors); an
# image is used only where the ranks that decide its outcome are at least this far apart, so
# that the outcome cannot depend on that rounding.
MARGIN = 0.02


def reference_logits(state: dict[str, torch.Tensor], paths: list[Path]) -> torch.Tensor:
    """One row of 1000 logits per image, the textbook way."""
    model = torchvision.models.resnet18()
    model.load_state_dict(state)
    model.eval()
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    rows = []
    with torch.no_grad():
        for path in paths:
            with Image.open(path) as img:
                x = preprocess(img.convert("RGB")).unsqueeze(0)
            rows.append(model(x)[0])
    return torch.stack(rows)


def reference_scores(
    logits: torch.Tensor, labels: list[int], classes: list[int] | None = None
) -> tuple[float, float]:
    """(top-1, top-5) in percent; ``classes``: restrict the logits to these outputs first."""
    top1 = top5 = 0
    for row, label in zip(logits, labels, strict=True):
        ranked = row.argsort(descending=True).tolist()
        if classes is not None:
            ranked = [c for c in ranked if c in set(classes)]
        top1 += ranked[0] == label
        top5 += label in ranked[:5]
    return 100 * top1 / len(labels), 100 * top5 / len(labels)


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` small JPEGs and PNGs of different sizes, all different."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo{i:02d}.{'png' if i % 4 == 3 else 'jpg'}"
        photo((96 + 8 * i, 72 + 5 * i), seed=100 + i).save(path)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Labelled:
    """Photos (index into the pool) with the class each one is filed under, and why."""

    photos: list[int]
    labels: list[int]
    outcome: list[str]  # "top1", "top5" (right in the top-5 only) or "wrong", per the reference


def label_by_outcome(logits: torch.Tensor, classes: list[int] | None = None) -> Labelled:
    """Photos i % 3 == 0 labelled with their reference top-1, == 1 with their 3rd guess (top-5
    right, top-1 wrong), == 2 with their least likely class (wrong), among ``classes`` if given."""
    photos, labels, outcome = [], [], []
    allowed = torch.tensor(classes) if classes is not None else torch.arange(logits.shape[1])
    for i, row in enumerate(logits):
        scores = row[allowed]
        order = scores.argsort(descending=True)
        s = scores[order]
        kind = ("top1", "top5", "wrong")[i % 3]
        pick = {"top1": 0, "top5": 2, "wrong": len(order) - 1}[kind]
        clear = s[0] - s[1] > MARGIN and s[4] - s[5] > MARGIN  # top-1 and top-5 set stable
        if clear:
            photos.append(i)
            labels.append(int(allowed[order[pick]]))
            outcome.append(kind)
    return Labelled(photos, labels, outcome)


def file_under(root: Path, names: dict[int, str], pool: list[Path], labelled: Labelled) -> None:
    """Class folders ``names`` (output index -> folder name; empty ones too), each labelled
    photo copied into its label's folder."""
    for name in names.values():
        (root / name).mkdir(parents=True, exist_ok=True)
    for photo_index, label in zip(labelled.photos, labelled.labels, strict=True):
        source = pool[photo_index]
        (root / names[label] / source.name).write_bytes(source.read_bytes())
