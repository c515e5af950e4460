"""How many JPEGs go to the device and how many the CPU workers decode.

Inputs are routed when their batch is handed to the workers: a :class:`Share` of ``f`` sends
exactly ``f`` of the JPEG files to the device, spread evenly (a running remainder, no random
draw). ``decode="gpu"`` is a fixed share of 1. ``decode="auto"`` on CUDA is an
:class:`AdaptiveShare`: it watches where the pipeline waits, batch by batch, and moves the share
towards the slower side's relief:

- the device-decoding step waited for the workers (their queue was empty): the workers are the
  bottleneck, so the device takes more;
- the model waited for the device-decoding step while the workers' batches were ready: the
  device decoding is the bottleneck, so the workers take more;
- nobody waited: the model is the bottleneck, and the share stays.

So the rate approaches the sum of both decoders' rates, up to the model's. The routing of a
batch is decided a few batches before it is decoded (the workers' prefetch), so the share moves
in small steps and settles within a few percent of the balance point.
"""

from __future__ import annotations

__all__ = ["AdaptiveShare", "Share"]


class Share:
    """Sends ``fraction`` (0-1) of the JPEG files to the device, evenly spread."""

    def __init__(self, fraction: float) -> None:
        self.fraction = min(1.0, max(0.0, fraction))
        self._credit = 0.0

    def take(self) -> bool:
        """Whether the next JPEG file goes to the device."""
        self._credit += self.fraction
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False

    def observe(self, *, loader_wait: float, model_wait: float, period: float) -> None:
        """One batch's waits (seconds): the decoding step's for the workers, the model's for the
        decoding step; ``period``: the seconds between two batches. A fixed share ignores them."""


class AdaptiveShare(Share):
    """A share that follows the waits (module docstring); starts at ``fraction``."""

    def __init__(self, fraction: float = 0.5, *, step: float = 1 / 64, slack: float = 0.05):
        super().__init__(fraction)
        self.step, self.slack = step, slack

    def observe(self, *, loader_wait: float, model_wait: float, period: float) -> None:
        tolerance = self.slack * period  # waits shorter than this are noise
        if loader_wait > tolerance:
            self.fraction = min(1.0, self.fraction + self.step)
        elif model_wait > tolerance:
            self.fraction = max(0.0, self.fraction - self.step)
