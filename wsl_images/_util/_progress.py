"""Progress bars for batch jobs: tqdm when it is installed, nothing when it is not.

tqdm is optional outside downloads (a torch.hub user may have only torch and torchvision):
without it, the bar is a no-op with the same two methods.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["Bar", "progress_bar"]

log = logging.getLogger(__name__)


class Bar(Protocol):
    """The part of a tqdm bar batch jobs use."""

    def update(self, n: float | None = 1) -> bool | None: ...

    def set_postfix(
        self, ordered_dict: None = None, refresh: bool = True, **kwargs: Any
    ) -> None: ...


class _NoBar:
    def update(self, n: float | None = 1) -> bool | None:
        return None

    def set_postfix(self, ordered_dict: None = None, refresh: bool = True, **kwargs: Any) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int | None, *, show: bool, unit: str = "img") -> Iterator[Bar]:
    """A bar of ``total`` units (None: not known yet, a count), drawn on a terminal only
    (``show`` False: never)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        log.debug("tqdm is not installed: no progress bar")
        yield _NoBar()
        return
    with tqdm(total=total, unit=unit, disable=None if show else True, dynamic_ncols=True) as bar:
        yield bar
