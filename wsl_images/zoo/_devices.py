"""Which device a model runs on, and at which autocast dtype: checked against this machine.

One rule for every entry point (``get_model(device=...)``, ``Classifier``, ``evaluate``, the
CLI's ``--device``): "auto" is CUDA when present, else MPS (Apple silicon), else the CPU; a
device that is not here is an :class:`InvalidInputError` naming it, why it is missing and what
is available, never torch's raw error from deep inside a load.

Autocast (``Classifier(autocast=...)``, ``evaluate(dtype=...)``, ``--dtype``) is decided per
device by :func:`autocast_dtype`: bfloat16 where the device computes in it (every CPU; CUDA GPUs
of compute capability 8.0 and later; MPS on macOS 14 and later), float16 in its place where it
does not (older GPUs, MPS on macOS 13), and a clear error where this torch cannot autocast on
the device at all (MPS before torch's MPS autocast).
"""

from __future__ import annotations

import logging

import torch

from ..errors import InvalidInputError

__all__ = ["autocast_dtype", "available_devices", "resolve_device"]

logger = logging.getLogger(__name__)

_DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; None or "auto" is CUDA when present, else MPS, else the CPU.

    :class:`InvalidInputError` for a name torch does not know, and for a CUDA or MPS device this
    machine does not have (the message lists the devices it has).
    """
    if device is None or device == "auto":
        return torch.device(_auto())
    try:
        result = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        msg = f"Unknown device {device!r}: use {_DEVICE_NAMES}."
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
    if _mps_available():
        found.append("mps")
    return found


def autocast_dtype(requested: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The dtype the forward pass is autocast to on ``device``; None: no autocast (float32).

    ``requested`` bfloat16 becomes float16 where ``device`` does not compute in bfloat16 (a
    CUDA GPU older than compute capability 8.0, MPS before macOS 14), with a warning in the
    log. :class:`InvalidInputError` where this torch has no autocast for the device type.
    """
    if requested is None or requested == torch.float32:
        return None
    if not _autocasts_on(device.type):
        msg = (
            f"Autocast to {_name(requested)} on {str(device)!r} is not supported by this torch "
            f"({torch.__version__}): upgrade torch, or run in float32 (autocast=None, "
            "--dtype float32)."
        )
        raise InvalidInputError(msg)
    if requested == torch.bfloat16 and not _computes_bfloat16(device):
        logger.warning(
            "%s does not compute in bfloat16 here: autocasting to float16 instead", device
        )
        return torch.float16
    return requested


def _auto() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if _mps_available() else "cpu"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())


def _autocasts_on(device_type: str) -> bool:
    """Whether torch.autocast accepts ``device_type`` (MPS needs a recent torch)."""
    check = getattr(torch.amp, "is_autocast_available", None)
    if check is None:  # older torch: autocast knows the CPU and CUDA (and devices we never use)
        return device_type in ("cpu", "cuda")
    return bool(check(device_type))


def _computes_bfloat16(device: torch.device) -> bool:
    if device.type == "cuda":  # natively (compute capability 8.0+), not emulated (slow)
        with torch.cuda.device(device):  # the check looks at the current device
            try:
                return bool(torch.cuda.is_bf16_supported(including_emulation=False))
            except TypeError:  # older torch: no emulation, its check is the native one
                return bool(torch.cuda.is_bf16_supported())
    if device.type == "mps":
        newer = getattr(torch.backends.mps, "is_macos_or_newer", None)
        return newer is not None and bool(newer(14, 0))  # MPS has bfloat16 from macOS 14
    return True


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


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
    if device.type == "mps" and not _mps_available():
        if not torch.backends.mps.is_built():
            return (
                f"this torch ({torch.__version__}) was built without MPS support (MPS is the "
                "GPU of Apple silicon Macs, in torch's macOS builds)"
            )
        return (
            "MPS (Apple GPU) is not available on this machine (it needs an Apple silicon Mac "
            "with macOS 12.3 or later)"
        )
    return None
