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
    """A random ``MODEL`` state dict (torchvision's initialisation), made once under ``work``."""
    path = work / "resnet50_random.pth"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(build_model(get_weights(MODEL).arch).state_dict(), path)
    return path
