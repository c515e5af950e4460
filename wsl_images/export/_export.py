"""Export to ONNX or TorchScript, then load the file back and check it against PyTorch.

Safety model (pooch's): everything is written into a temporary folder beside the output
(:func:`wsl_images._util.atomic_folder`), loaded back and compared there, and only moved into
place once it matched, so a failed export leaves no half-written file and a killed one's folder is
removed by the next write into that folder. ONNX uses torch's default (dynamo-based)
exporter, with a dynamic batch dimension unless ``dynamic_batch=False``; weights of models over
about 1.5 GB go to ``FILE.<sha256[:8]>.data`` beside ``FILE`` (protobuf's 2 GB limit), a name of
their own so that replacing an export is atomic too (:mod:`wsl_images.export._onnx_data`).
torch is imported inside the functions, so the CLI's parser can read this module's defaults.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._util import EXPORT_ONNXRUNTIME, atomic_folder, missing_onnx_packages, outdated_onnxruntime
from ..errors import ExportError, InvalidInputError, MissingDependencyError
from ._onnx_data import keep_published, name_external_data, remove_stale_data

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ATOL", "FORMATS", "RTOL", "ExportResult", "export_model", "export_onnx"]

log = logging.getLogger(__name__)

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[Format, ...] = ("onnx", "torchscript")
# Elementwise |exported - pytorch| <= ATOL + RTOL * |pytorch| on the float32 logits. Measured
# differences are ~1e-5 (ONNX Runtime's kernels sum in another order); a wrong graph is off by 0.1+.
ATOL = 1e-3
RTOL = 1e-3
# Weights above this go to an external data file (torch's own threshold; tests lower it).
_EXTERNAL_DATA_BYTES = 1536 * 1024**2
# (trace batch, check batches). A dynamic ONNX graph is traced with 2 (torch.export specialises
# a dimension of size 1) and checked with 1 and 3, two sizes it never saw; a static one takes
# batches of exactly 1. TorchScript traces of these models accept any batch: traced with 2,
# checked with 3.
_ONNX_DYNAMIC, _ONNX_STATIC, _TORCHSCRIPT = (2, (1, 3)), (1, (1,)), (2, (3,))


@dataclass(frozen=True)
class ExportResult:
    """Where the model went and how closely the exported file matched PyTorch."""

    path: Path
    format: Format
    batch_sizes: tuple[int, ...]  # of the random batches the check ran on
    max_abs_diff: float  # over all of them
    atol: float
    rtol: float
    # ONNX over ~1.5 GB: the weights' file beside ``path`` (``FILE.<sha256[:8]>.data``), which
    # must travel with it; None when the graph holds them.
    data_path: Path | None = None

    @property
    def batch_size(self) -> int:
        """The largest batch checked (the one field before batch_sizes existed)."""
        return max(self.batch_sizes)


def export_model(
    name: str,
    output: str | os.PathLike[str],
    *,
    format: Format = "onnx",
    checkpoint_path: str | os.PathLike[str] | None = None,
    check_hash: bool = True,
    mmap: bool = False,
    num_classes: int = 1000,
    dynamic_batch: bool = True,
    image_size: int = 224,
    atol: float = ATOL,
    rtol: float = RTOL,
    progress: bool = True,
) -> ExportResult:
    """Export model ``name`` (its released weights, or ``checkpoint_path``) to ``output``.

    The file is loaded back (ONNX Runtime / ``torch.jit.load``), run on a random batch and
    compared with PyTorch; :class:`ExportError` if any logit is off by more than
    ``atol + rtol * |logit|``, and then nothing is written. ``dynamic_batch`` (default): the
    ONNX model accepts any batch size, checked with two it was not traced with; ``False``: it
    takes batches of exactly 1. TorchScript always accepts any batch. ``check_hash``: False
    loads a ``checkpoint_path`` URL whose name only looks hashed (``ckpt-epoch-10.pth``).
    ``mmap``: map a local ``checkpoint_path`` file instead of reading it (see ``get_model``).
    """
    from ..models import get_model

    if format not in FORMATS:
        msg = f"format {format!r} is not supported; choose one of {', '.join(FORMATS)}."
        raise InvalidInputError(msg)
    if format == "onnx":
        _require_onnx()
    target = Path(output).expanduser()
    if not target.parent.is_dir():
        msg = f"Output folder {str(target.parent)!r} does not exist; create it first."
        raise InvalidInputError(msg)
    model = get_model(
        name,
        checkpoint_path=checkpoint_path,
        check_hash=check_hash,
        mmap=mmap,
        num_classes=num_classes,
        progress=progress,
    ).eval()
    onnx_batches = _ONNX_DYNAMIC if dynamic_batch else _ONNX_STATIC
    trace_batch, check_batches = onnx_batches if format == "onnx" else _TORCHSCRIPT
    example, checks = _random_batches(trace_batch, check_batches, image_size)
    with atomic_folder(target) as workdir:
        data = _write(model, example, workdir / target.name, format, dynamic_batch)
        run = _runner(workdir / target.name, format)
        diff = max(_check(model, run, x, atol=atol, rtol=rtol, format=format) for x in checks)
        del run  # ONNX Runtime may map the data file: let go of it before it moves
        if data is not None:
            keep_published(workdir, target.parent, *data)
    if format == "onnx":
        remove_stale_data(target)  # earlier exports' data, now that the graph reads ours
    log.info("Exported %s to %s (max |diff| %.2e)", name, target, diff)
    data_path = None if data is None else target.with_name(data[0])
    return ExportResult(target, format, check_batches, diff, atol, rtol, data_path)


def export_onnx(
    module: nn.Module,
    path: Path,
    *,
    output_name: str = "logits",
    image_size: int = 224,
    external_data: bool | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> float:
    """Export ``module`` (in eval mode; NCHW float images in) to the ONNX file ``path`` with a
    dynamic batch, load it back with ONNX Runtime and check it as :func:`export_model` does
    (random batches of 1 and 3, sizes it was not traced with); returns the largest |diff|.

    Writes ``path``, and ``path.name + ".data"`` (the weights) when ``external_data`` (None:
    for modules over ~1.5 GB, protobuf's limit), where they are: the caller's temp folder,
    published only if this returns. :class:`ExportError` if the graph does not match.
    """
    _require_onnx()
    trace_batch, check_batches = _ONNX_DYNAMIC
    example, checks = _random_batches(trace_batch, check_batches, image_size)
    _write_onnx(
        module, example, path, dynamic_batch=True, output_name=output_name, external=external_data
    )
    run = _onnx_runner(path)
    return max(_check(module, run, x, atol=atol, rtol=rtol, format="onnx") for x in checks)


def _random_batches(
    trace: int, checks: tuple[int, ...], image_size: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The batch to trace with and the batches to check with (seeded: the same every time)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    example = torch.randn(trace, 3, image_size, image_size, generator=generator)
    return example, [torch.randn(b, 3, image_size, image_size, generator=generator) for b in checks]


def _write(
    model: nn.Module, example: torch.Tensor, path: Path, format: Format, dynamic_batch: bool
) -> tuple[str, str] | None:
    """Export to ``path``; returns the ONNX external data file's name and sha256, if any."""
    if format == "onnx":
        if _write_onnx(model, example, path, dynamic_batch=dynamic_batch):
            # A name of its own, so the graph being replaced keeps reading its data until it
            # is gone.
            return name_external_data(path, path.name)
        return None
    _write_torchscript(model, example, path)
    return None


def _runner(path: Path, format: Format) -> Callable[[torch.Tensor], torch.Tensor]:
    return _onnx_runner(path) if format == "onnx" else _torchscript_runner(path)


def _check(
    model: nn.Module,
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    atol: float,
    rtol: float,
    format: Format,
) -> float:
    """Run the exported model on ``x`` and compare with PyTorch (see :func:`compare_outputs`)."""
    import torch

    what = f"{format} export on a batch of {x.shape[0]}"
    try:
        got = run(x)
    except Exception as exc:  # the runtime refused the input: the export is not what we asked
        msg = f"The {what} failed to run: {exc}. Nothing was written."
        raise ExportError(msg) from exc
    with torch.no_grad():
        expected = model(x)
    return compare_outputs(got, expected, atol=atol, rtol=rtol, what=what)


def compare_outputs(
    got: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float, what: str
) -> float:
    """The largest absolute difference; :class:`ExportError` if beyond the tolerance."""
    if got.shape != expected.shape:
        msg = f"The {what} returned shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}."
        raise ExportError(msg)
    diff = (got.float() - expected.float()).abs()
    max_diff = float(diff.max())
    bad = int((diff > atol + rtol * expected.float().abs()).sum())
    if bad:
        msg = (
            f"The {what} does not match PyTorch: {bad} of {diff.numel()} outputs differ by more "
            f"than atol={atol:g} + rtol={rtol:g} * |value| (max |diff| {max_diff:.3g}). "
            "Nothing was written. Check the torch/onnxruntime versions, or raise --atol/--rtol "
            "if the difference is acceptable."
        )
        raise ExportError(msg)
    return max_diff


def _require_onnx() -> None:
    missing = missing_onnx_packages()
    if missing:
        msg = (
            f"ONNX export needs the optional packages {', '.join(missing)}: "
            "pip install 'wsl-images[onnx]' (or pip install onnx onnxruntime onnxscript)."
        )
        raise MissingDependencyError(msg)
    old = outdated_onnxruntime(EXPORT_ONNXRUNTIME)
    if old is not None:  # the parity check runs the exported graph in onnxruntime
        floor = ".".join(map(str, EXPORT_ONNXRUNTIME))
        msg = (
            f"ONNX export checks the exported graph in onnxruntime >= {floor}, found {old}, "
            f"which cannot read it: pip install -U 'onnxruntime>={floor}'."
        )
        raise MissingDependencyError(msg)


def _write_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    dynamic_batch: bool,
    output_name: str = "logits",
    external: bool | None = None,
) -> bool:
    """Export to ``path``; True if the weights went to ``path.name + ".data"`` beside it
    (``external``; None: if they are over ~1.5 GB)."""
    import torch

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    big = weights > _EXTERNAL_DATA_BYTES if external is None else external
    kwargs: dict[str, Any] = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=[output_name],
            dynamo=True,
            external_data=big,
            verbose=False,
            **kwargs,
        )
    except Exception as exc:
        msg = f"torch.onnx.export failed: {exc}"
        raise ExportError(msg) from exc
    return big


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    import torch

    # torch.jit is deprecated (FutureWarning) but still the one single-file format that
    # C++/mobile runtimes load; the README recommends ONNX for new deployments.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
    traced.save(str(path))


def _onnx_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(None, {name: x.numpy()})
        return torch.from_numpy(out)

    return run


def _torchscript_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]

    def run(x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            out: torch.Tensor = loaded(x)
        return out

    return run
