"""Top-1/top-5 accuracy on ImageNet-style folders, as published evaluations measure it: which
layout a folder has (WordNet ids or class indices, class subsets such as ImageNet-R/A), and
``evaluate()`` over it.

Owns: reading labelled dataset folders and scoring a model on them.
May use: ``inference``, ``distributed``, ``zoo``, ``errors``, ``_util``.
"""

from __future__ import annotations

from ._datasets import EvalSet, Layout, imagenet_wnids, sample, scan
from ._evaluate import ClassScore, EvalResult, Failure, default_batch_size, evaluate

__all__ = [
    "ClassScore",
    "EvalResult",
    "EvalSet",
    "Failure",
    "Layout",
    "default_batch_size",
    "evaluate",
    "imagenet_wnids",
    "sample",
    "scan",
]
