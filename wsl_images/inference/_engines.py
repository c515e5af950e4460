"""Engines: what runs the model's forward pass, from a normalised batch to its pooled features.

- ``torch`` (the default): the model itself, channels_last, under ``inference_mode`` (and
  ``torch.autocast`` when asked), on any device torch has.
- ``onnxruntime``: an ONNX graph of the same forward (exported once per checkpoint and kept in
  the cache: :mod:`._graph`), run by ONNX Runtime: its CPU provider, or its CUDA provider where
  ``onnxruntime-gpu`` is installed. On CPUs it runs ResNet-50 1.25-1.55x as fast as the torch
  engine, each at its own batch (its kernels fuse BatchNorm into the convolutions and use a
  blocked channel layout). It gets the threads the torch engine would get
  (``torch.get_num_threads()``), float32 only.

The head (``fc``) is not part of either: it runs in torch, float32, on the pooled features, so
``predict``, ``embed`` and ``evaluate`` (whose class subsets restrict the logits) read the same
numbers whatever the engine. onnxruntime is an optional extra, imported only by its engine.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import nn

from .._util import ENGINE_ONNXRUNTIME, missing_onnx_packages, outdated_onnxruntime
from ..errors import InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from torchvision.models import ResNet

__all__ = [
    "ENGINES",
    "Engine",
    "EngineName",
    "OnnxRuntimeEngine",
    "PooledFeatures",
    "TorchEngine",
    "check_engine",
    "pooled_features",
    "session_options",
]

log = logging.getLogger(__name__)

EngineName = Literal["torch", "onnxruntime"]
ENGINES: tuple[EngineName, ...] = ("torch", "onnxruntime")
INSTALL = "pip install 'wsl-images[onnxruntime]'"


def pooled_features(model: ResNet, x: torch.Tensor) -> torch.Tensor:
    """torchvision ResNet's forward up to and including the global average pool."""
    m = model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


class PooledFeatures(nn.Module):
    """A ResNet's forward up to the pooled features, as a module (what the graph holds)."""

    def __init__(self, model: ResNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.model, x)


class Engine(Protocol):
    """Runs the forward pass: a normalised NCHW float batch on the device in, pooled float32
    features on the device out."""

    name: EngineName

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


class TorchEngine:
    """The model itself: channels_last, under autocast when ``autocast_dtype`` is set."""

    name: EngineName = "torch"

    def __init__(self, model: ResNet, device: torch.device, autocast_dtype: torch.dtype | None):
        self.model, self.device, self.autocast_dtype = model, device, autocast_dtype

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            return pooled_features(self.model, x).float()


def session_options(threads: int, *, optimise: bool = True) -> Any:
    """The onnxruntime engine's session options, measured on ResNet-50 (docs/benchmarks.md):
    every graph optimisation (BatchNorm folded, convolutions fused with their activations,
    NCHWc blocked layout: ENABLE_EXTENDED alone is 0.7x), or none with ``optimise=False`` (a
    graph saved optimised); one operator at a time (the graph is a chain: inter-op parallelism
    has nothing to run), the memory arena on (batches of one size reuse its buffers), and
    ``threads`` intra-op threads that sleep between batches rather than spin, so decoding
    workers get the cores while a batch is being decoded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimise else level.ORT_DISABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = True
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are about its own choices
    return options


class OnnxRuntimeEngine:
    """An ONNX Runtime session on the graph at ``graph`` (input NCHW float32, output the pooled
    features), with ``threads`` intra-op threads (options: :func:`session_options`);
    ``optimised``: the graph is onnxruntime's own optimised one, saved for this CPU kind
    (:mod:`._optimised`), loaded as it is."""

    name: EngineName = "onnxruntime"

    def __init__(
        self, graph: Path, device: torch.device, threads: int, *, optimised: bool = False
    ) -> None:
        import onnxruntime as ort

        options = session_options(threads, optimise=not optimised)
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            cuda = ("CUDAExecutionProvider", {"device_id": device.index or 0})
            providers = [cuda, *providers]
        self.device, self.threads, self.optimised = device, threads, optimised
        self.session = ort.InferenceSession(str(graph), options, providers=providers)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # The session takes host memory: on CUDA its provider copies the batch in and out.
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = self.session.run([self._output], {self._input: batch})
        return torch.from_numpy(out).to(self.device)


def check_engine(
    engine: str, device: torch.device, autocast_dtype: torch.dtype | None
) -> EngineName:
    """``engine`` checked before anything is loaded: a known name, its packages installed, a
    device and dtype it runs. :class:`InvalidInputError` names the value and what to do;
    :class:`MissingDependencyError` names the extra to install."""
    if engine not in ENGINES:
        msg = f"Unknown engine {engine!r}: use one of {', '.join(ENGINES)}."
        raise InvalidInputError(msg)
    if engine == "torch":
        return "torch"
    # The runtime, and the exporter that makes its graph.
    missing = missing_onnx_packages()
    if missing:
        msg = (
            f"engine='onnxruntime' needs the optional packages {', '.join(missing)}, which are "
            f"not installed: {INSTALL} (or use the default engine='torch')."
        )
        raise MissingDependencyError(msg)
    old = outdated_onnxruntime(ENGINE_ONNXRUNTIME)
    if old is not None:
        floor = ".".join(map(str, ENGINE_ONNXRUNTIME))
        msg = (
            f"engine='onnxruntime' needs onnxruntime >= {floor} (older ones cannot reload the "
            f"graph it saves optimised for this CPU), found {old}: pip install -U "
            f"'onnxruntime>={floor}' (or use the default engine='torch')."
        )
        raise MissingDependencyError(msg)
    if autocast_dtype is not None:
        msg = (
            f"autocast {str(autocast_dtype).replace('torch.', '')!r} runs under torch.autocast; "
            "the onnxruntime engine computes in float32. Drop the autocast/--dtype setting, or "
            "use engine='torch'."
        )
        raise InvalidInputError(msg)
    if device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            msg = (
                f"engine='onnxruntime' on {str(device)!r} needs ONNX Runtime's CUDA provider, "
                f"which this onnxruntime {ort.__version__} does not have (providers: "
                f"{', '.join(ort.get_available_providers())}). Install onnxruntime-gpu in "
                "place of onnxruntime, run it on the CPU (device='cpu', --device cpu), or use "
                "engine='torch' on the GPU."
            )
            raise InvalidInputError(msg)
    elif device.type != "cpu":
        msg = (
            f"engine='onnxruntime' runs on 'cpu' or 'cuda', not on {str(device)!r}: use "
            "device='cpu' (--device cpu), or engine='torch' there."
        )
        raise InvalidInputError(msg)
    return "onnxruntime"
