"""The hashed download cache: the only code that creates, names, verifies, records, locks and
deletes files in the cache folder.

Owns: the cache folder. Model-agnostic: URLs, file names and hash prefixes in, verified paths
out; what a name means is the caller's (``models.py`` resolves model names to URLs). It keeps
data derived from a source by key for whoever asks (tensor layouts, engine graphs), tied to the
source's sha256, covered by ``verify_cache`` and removed with it by ``clear_cache``.
May use: ``errors`` and ``_util``. Imports no torch; ``requests`` and ``tqdm`` are imported when
a download starts.

- :func:`download_url` / :func:`loadable`: a verified file in the cache, fetched if needed
  (parallel Range connections on slow links, resumed after drops, hashed as it arrives);
  :func:`mirror_url`: where a published file is fetched from (``WSL_IMAGES_MIRROR``);
- :func:`load_derived` / :func:`keep_derived`: data derived from a source, by key (small:
  hashed on every read); :func:`load_derived_files` / :func:`keep_derived_files`: a folder of
  files derived from a source, by key (large: an engine's graph; published whole, each file
  trusted by its record once hashed); :func:`content_source`: the stand-in source of a file
  outside the cache, known by its sha256 (a user's checkpoint), to derive from;
  :func:`file_sha256`: that sha256, hashed once per process while the file is unchanged;
  :func:`scratch_folder`: a passing folder inside the cache for a maker's intermediate files;
- :func:`scan_cache`, :func:`verify_cache`, :func:`clear_cache`: management (by file name; the
  caller names the files it knows).

Modules: ``_paths`` (locations, names, removal), ``_env`` (the ``WSL_IMAGES_*`` knobs),
``_records`` (verification records), ``_http`` (one GET, the retry loop), ``_pieces``,
``_fileio``, ``_hasher`` and ``_transfer`` (parallel download), ``_space`` (a full disk,
explained), ``_derive`` (derived files), ``_bundles`` (derived folders), ``_lock`` (the
per-file lock), ``_store`` (verified sources), ``_mismatch`` (what a hash mismatch tells the
user), ``_manage`` (scan, verify, clear).
"""

from __future__ import annotations

from .._util import hash_prefix_of
from ._bundles import keep_derived_files, load_derived_files, scratch_folder
from ._derive import keep_derived, load_derived
from ._http import TransferOptions
from ._manage import BadFile, CacheEntry, DerivedFile, clear_cache, scan_cache, verify_cache
from ._paths import (
    LAYOUT,
    content_source,
    derived_path,
    derived_paths,
    filename_from_url,
    get_cache_dir,
    is_offline,
)
from ._records import file_sha256, sha256_of
from ._store import download_url, loadable, mirror_url, remove_source, source_sha256

__all__ = [
    "LAYOUT",
    "BadFile",
    "CacheEntry",
    "DerivedFile",
    "TransferOptions",
    "clear_cache",
    "content_source",
    "derived_path",
    "derived_paths",
    "download_url",
    "file_sha256",
    "filename_from_url",
    "get_cache_dir",
    "hash_prefix_of",
    "is_offline",
    "keep_derived",
    "keep_derived_files",
    "load_derived",
    "load_derived_files",
    "loadable",
    "mirror_url",
    "remove_source",
    "scan_cache",
    "scratch_folder",
    "sha256_of",
    "source_sha256",
    "verify_cache",
]
