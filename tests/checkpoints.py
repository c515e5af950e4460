"""Generated checkpoints: random weights in the exact architecture, named with their sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from wsl_images.models import build_model
from wsl_images.zoo import get_weights


def random_state_dict(name: str = "resnet18_ssl", seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of model ``name`` with random weights (and non-trivial BN statistics)."""
    torch.manual_seed(seed)
    model = build_model(get_weights(name).arch)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
        elif key.endswith("running_mean"):
            value.normal_(0, 0.1)
        elif key.endswith("num_batches_tracked"):
            value.fill_(1000)
    return state


def save_hashed(state: dict[str, torch.Tensor], folder: Path, stem: str, *, legacy: bool) -> Path:
    """Save ``state`` (legacy or zip format) as ``folder/stem-<sha256[:8]>.pth``."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{stem}.tmp"
    torch.save(state, tmp, _use_new_zipfile_serialization=not legacy)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{stem}-{digest[:8]}.pth"
    tmp.replace(path)
    return path
