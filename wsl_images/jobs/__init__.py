"""Sharded, resumable runs of classify and embed over whole datasets (``--output-dir DIR``):
the input listing, the shards each rank writes, the run's folder and record, and the readers
of its results.

Owns: everything in a run's output folder (``run.json``, the listing, ``shard-*.jsonl``/``.npy``,
``_SUCCESS``): written whole or not at all, resumed from what is complete.
May use: ``inference``, ``distributed``, ``models``, ``cache``, ``errors``, ``_util``.
The folder's constants import no torch (the command line shows them); the rest loads on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._util import lazy_names
from ._outdir import DEFAULT_SHARD_SIZE, INDEX_FILE, LISTING_FILE, RUN_FILE, SUCCESS_FILE

if TYPE_CHECKING:
    from ._results import EmbeddingMatrix, ResultRow, read_embeddings, read_results
    from ._run import ShardJob, ShardSummary, run_sharded

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "INDEX_FILE",
    "LISTING_FILE",
    "RUN_FILE",
    "SUCCESS_FILE",
    "EmbeddingMatrix",
    "ResultRow",
    "ShardJob",
    "ShardSummary",
    "read_embeddings",
    "read_results",
    "run_sharded",
]

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "EmbeddingMatrix": "._results",
        "ResultRow": "._results",
        "read_embeddings": "._results",
        "read_results": "._results",
        "ShardJob": "._run",
        "ShardSummary": "._run",
        "run_sharded": "._run",
    },
    globals(),
)
