"""What the classify and evaluate benchmarks run on: photo-like JPEGs and a random checkpoint.

Imported by the benchmark scripts (run from this folder, so it is on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from wsl_images.models import build_model
from wsl_images.zoo import get_weights

MODEL = "resnet50_ssl"


def photo(rng: np.random.Generator) -> Image.Image:
    """A 500x375 image with photo-like texture: smooth shapes plus fine noise (so JPEG decoding
    costs what it costs for real photos)."""
    coarse = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 18, (375, 500, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.DETAIL)


def checkpoint(work: Path) -> Path:
    """A random ``MODEL`` state dict (torchvision's initialisation) with realistic BatchNorm
    statistics, made once under ``work``.

    torchvision initialises every BatchNorm's running mean and variance to 0 and 1, which
    trained models never have; the activations of such a model grow layer after layer. The
    statistics are measured instead, as training would, on photo-like images: every layer then
    sees normalised activations of trained magnitudes (as the engines would see them on the
    released weights), and the class scores are spread as a trained model's are.
    """
    path = work / "resnet50_random_bn.pth"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = build_model(get_weights(MODEL).arch)
        _measure_batchnorm(model, np.random.default_rng(1))
        torch.save(model.state_dict(), path)
    return path


def _measure_batchnorm(model: torch.nn.Module, rng: np.random.Generator) -> None:
    """Running statistics of every BatchNorm over 32 photo-like crops (a cumulative average)."""
    from wsl_images.zoo import get_weights as weights_of

    preprocess = weights_of(MODEL).transforms()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # the plain average over all batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.stack([preprocess(photo(rng)) for _ in range(16)]))
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
