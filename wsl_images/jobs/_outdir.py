"""The folder of a sharded run (``--output-dir DIR``): its layout, its record, its state.

    DIR/run.json                   what made the shards: a rerun resumes only if it matches
    DIR/inputs.jsonl, inputs-index.npy   the input listing (:mod:`wsl_images.jobs._listing`)
    DIR/shard-KKKKKK.npy           embed: float32 rows of the shard's good inputs (written first)
    DIR/shard-KKKKKK.jsonl         one line per input; its arrival marks shard K complete
    DIR/_SUCCESS                   every shard is there

This module imports neither torch nor numpy. Every file is written with
:func:`wsl_images._util.atomic_file`, so a name that exists holds
a whole file, and a killed run leaves only temp files, which the next write there removes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .._util import atomic_file
from ..errors import InvalidInputError

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "INDEX_FILE",
    "LISTING_FILE",
    "RUN_FILE",
    "SUCCESS_FILE",
    "RunSpec",
    "check_folder",
    "clear_run",
    "count_errors",
    "has_shard",
    "missing_shards",
    "read_spec",
    "shard_path",
    "write_json",
]

RUN_FILE, SUCCESS_FILE = "run.json", "_SUCCESS"
LISTING_FILE, INDEX_FILE = "inputs.jsonl", "inputs-index.npy"
# A multiple of every power-of-two batch size up to 8192, so shards are whole batches (the same
# batches as a single-file run); 64 MB of 2048-d float32 rows per embed shard; 1,221 shards for
# ten million images. The README explains the choice. (Torch-free module: the CLI shows it.)
DEFAULT_SHARD_SIZE = 8192
_SHARD = re.compile(r"shard-\d{6,}\.(jsonl|npy)")
_FORMAT = "wsl-images sharded run 1"
# Options that runs recorded before the option existed had, in effect (their output is that of
# this value): a run.json without "engine" was computed by the torch engine.
# What a run.json written before an option was recorded used.
_IMPLIED: dict[str, object] = {"engine": "torch", "classes": 1000, "labels": "imagenet"}
# The exact key an error line carries: quotes inside paths and messages are escaped in JSON,
# so this byte string occurs once per failed input and nowhere else.
_ERROR_KEY = b'"error": '


def shard_path(folder: Path, k: int, suffix: str = ".jsonl") -> Path:
    """``folder/shard-KKKKKK.jsonl`` (six digits, more past 999999 shards)."""
    return folder / f"shard-{k:06d}{suffix}"


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a sharded run's output; stored as ``run.json``."""

    command: str  # "classify" or "embed"
    model: str
    checkpoint_sha256: str
    options: dict[str, Any]  # those that change the output: top_k, dtype, engine
    shard_size: int
    inputs: int = 0
    input_fingerprint: str = ""  # sha256 of the listing's lines
    format: str = field(default=_FORMAT)

    @property
    def shards(self) -> int:
        return -(-self.inputs // self.shard_size)

    def differences(self, now: RunSpec, *, inputs: bool) -> list[str]:
        """What differs between this (recorded) run and ``now``, one phrase per field."""
        ours, theirs = asdict(self), asdict(now)
        found = [
            f"{k} {ours[k]!r} there, {theirs[k]!r} now"
            for k in ("command", "model", "shard_size")
            if ours[k] != theirs[k]
        ]
        if self.checkpoint_sha256 != now.checkpoint_sha256:
            old, new = self.checkpoint_sha256[:12], now.checkpoint_sha256[:12]
            found.append(f"checkpoint sha256 {old}... there, {new}... now")
        for key in sorted(set(self.options) | set(now.options)):
            there = self.options.get(key, _IMPLIED.get(key))
            here = now.options.get(key, _IMPLIED.get(key))
            if there != here:
                found.append(f"{key} {there!r} there, {here!r} now")
        if inputs and (self.inputs, self.input_fingerprint) != (now.inputs, now.input_fingerprint):
            found.append(
                f"input list of {self.inputs} (sha256 {self.input_fingerprint[:12]}...) there, "
                f"of {now.inputs} (sha256 {now.input_fingerprint[:12]}...) now"
            )
        return found

    def with_inputs(self, count: int, fingerprint: str) -> RunSpec:
        return replace(self, inputs=count, input_fingerprint=fingerprint)


def check_folder(folder: Path) -> None:
    """``folder`` exists (or is created) as a writable folder; else a usage error."""
    if folder.exists() and not folder.is_dir():
        msg = f"--output-dir {str(folder)!r} is a file, not a folder: name a folder (new or not)."
        raise InvalidInputError(msg)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"--output-dir {str(folder)!r} cannot be created ({exc.strerror or exc})."
        raise InvalidInputError(msg) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"--output-dir {str(folder)!r} is not writable: choose another folder."
        raise InvalidInputError(msg)


def read_spec(folder: Path) -> RunSpec | None:
    """The recorded run of ``folder``; None if there is none. A usage error if unreadable, or
    if run files are there without a record (nothing of ours made them)."""
    path = folder / RUN_FILE
    if not path.exists():
        ours = [n for n in os.listdir(folder) if _SHARD.fullmatch(n) or n == SUCCESS_FILE]
        if ours:
            msg = (
                f"--output-dir {str(folder)!r} holds {ours[0]!r} but no {RUN_FILE}: it is not "
                "a run this command can resume. Choose another folder, or add --overwrite to "
                "delete its shards and start over."
            )
            raise InvalidInputError(msg)
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        spec = RunSpec(**data)
        if spec.format != _FORMAT:
            raise ValueError(spec.format)
    except (OSError, ValueError, TypeError) as exc:
        msg = (
            f"{str(path)!r} is not a wsl-images run record ({exc}). Choose another folder, or "
            "add --overwrite to start over there."
        )
        raise InvalidInputError(msg) from exc
    return spec


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as ``path``, atomically."""
    text = json.dumps(data, indent=2) + "\n"
    with atomic_file(path) as tmp, open(tmp.fd, "w", encoding="utf-8", closefd=False) as out:
        out.write(text)


def clear_run(folder: Path) -> int:
    """Remove the files of a run from ``folder`` (record first, shards after); returns how many.
    Files of other names are left alone."""
    removed = 0
    for name in (RUN_FILE, SUCCESS_FILE, LISTING_FILE, INDEX_FILE):
        if (folder / name).exists():
            (folder / name).unlink()
            removed += 1
    for name in sorted(os.listdir(folder)):
        if _SHARD.fullmatch(name):
            (folder / name).unlink()
            removed += 1
    return removed


def missing_shards(folder: Path, spec: RunSpec) -> list[int]:
    """The shards of ``spec`` not complete in ``folder`` (embed needs its .npy too), from one
    listing of the folder. On a shared filesystem the listing may lag behind other clients'
    renames: a shard it misses is written again (same bytes), never lost."""
    names = set(os.listdir(folder))
    return [
        k
        for k in range(spec.shards)
        if any(shard_path(folder, k, suffix).name not in names for suffix in _suffixes(spec))
    ]


def has_shard(folder: Path, spec: RunSpec, k: int) -> bool:
    """Whether shard ``k`` is complete in ``folder``, by looking its files up by name."""
    return all(shard_path(folder, k, suffix).is_file() for suffix in _suffixes(spec))


def _suffixes(spec: RunSpec) -> tuple[str, ...]:
    return (".jsonl", ".npy") if spec.command == "embed" else (".jsonl",)


def count_errors(folder: Path, shards: list[int]) -> int:
    """Failed inputs in complete shards (their error lines), by a byte count, no JSON parsing."""
    total = 0
    for k in shards:
        total += shard_path(folder, k).read_bytes().count(_ERROR_KEY)
    return total
