"""The hashed download cache: the only code that creates, names, verifies, records, locks and
deletes files in the cache folder.

What it gives the rest of the package:

- :func:`download` / :func:`download_url`: a verified file in the cache, fetched if needed
  (parallel Range connections on slow links, resumed after drops, hashed as it arrives);
- :func:`loadable`: the verified file a model loads from (mapped as it lies, either format);
- :func:`load_layout` / :func:`keep_layout`: a source's layout (where its tensors lie), derived
  once after the first parse and hash-checked on every read, so later loads parse nothing;
- :func:`scan_cache`, :func:`verify_cache`, :func:`clear_cache`: management, for the CLI and users.

Modules: ``_paths`` (locations, names, removal), ``_env`` (the ``WSL_IMAGES_*`` knobs),
``_records`` (verification records), ``_http`` (one GET, the retry loop), ``_pieces``,
``_fileio``, ``_hasher`` and ``_transfer`` (parallel download), ``_space`` (a full disk,
explained), ``_derive`` (derived files), ``_lock`` (the per-file lock), ``_store`` (verified
sources), ``_mismatch`` (what a hash mismatch tells the user), ``_manage`` (scan, verify, clear).
Nothing here imports torch; ``requests`` and ``tqdm`` are imported when a download starts.
"""

from __future__ import annotations

from .._util import hash_prefix_of
from ._derive import keep_layout, load_layout
from ._http import TransferOptions
from ._manage import BadFile, CacheEntry, DerivedFile, clear_cache, scan_cache, verify_cache
from ._paths import filename_from_url, get_cache_dir, is_offline
from ._records import sha256_of
from ._store import download, download_url, loadable, remove_source, resolve_url, source_sha256

__all__ = [
    "BadFile",
    "CacheEntry",
    "DerivedFile",
    "TransferOptions",
    "clear_cache",
    "download",
    "download_url",
    "filename_from_url",
    "get_cache_dir",
    "hash_prefix_of",
    "is_offline",
    "keep_layout",
    "load_layout",
    "loadable",
    "remove_source",
    "resolve_url",
    "scan_cache",
    "sha256_of",
    "source_sha256",
    "verify_cache",
]
