"""Which device a model runs on: a name checked against what this machine has.

One rule for every entry point (``get_model(device=...)``, ``Classifier``, ``evaluate``, the
CLI's ``--device``): a device that is not here is an :class:`InvalidInputError` naming it, why
it is missing and what is available, never torch's raw error from deep inside a load.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError

__all__ = ["available_devices", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; None or "auto" is CUDA when present, else the CPU.

    :class:`InvalidInputError` for a name torch does not know, and for a CUDA or MPS device this
    machine does not have (the message lists the devices it has).
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        result = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        msg = f"Unknown device {device!r}: use auto, cpu, cuda or cuda:N."
        raise InvalidInputError(msg) from exc
    missing = _why_missing(result)
    if missing is not None:
        msg = (
            f"Device {str(device)!r} was requested, but {missing}. Available here: "
            f"{', '.join(available_devices())}. Use one of those (e.g. device='cpu', or "
            "--device cpu on the command line)."
        )
        raise InvalidInputError(msg)
    return result


def available_devices() -> list[str]:
    """The devices a model can run on here: ``cpu``, each CUDA device, ``mps``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def _why_missing(device: torch.device) -> str | None:
    """Why ``device`` cannot be used here, or None if it can (or is not checked: meta, ...)."""
    if device.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            return f"this torch ({torch.__version__}) was built without CUDA support"
        if not torch.cuda.is_available():
            return "CUDA is not available (no NVIDIA GPU or driver was found)"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA device(s), numbered from 0"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "MPS (Apple GPU) is not available on this machine"
    return None
