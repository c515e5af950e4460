"""Which format a checkpoint file is in, and what a failure to read one means.

torch tells its two formats apart by the first four bytes: a zip archive (``torch.save`` since
1.6) starts with a local file header, ``PK\\x03\\x04``; anything else is read as the legacy
format (``torch.serialization._is_zipfile``). ``zipfile.is_zipfile`` is not the same test: it
looks for an end-of-archive record anywhere in the last 64 KiB, which a legacy file's tensor
bytes can hold by chance. Files that are plainly something else (an image, an HTML error page)
are named before any parsing. After a failed read, :func:`explain` says what failed: only a
global refused by ``torch.load(weights_only=True)``'s allowlist is a refusal for safety.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

__all__ = ["ZIP_MAGIC", "explain", "foreign", "is_torchscript", "refused_global"]

ZIP_MAGIC = b"PK\x03\x04"
HEAD_BYTES = 16  # enough for every signature below

_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"\x1f\x8b", "a gzip-compressed file (unpack it first)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"<", "an HTML or XML document (an error page saved instead of the file?)"),
    (b"{", "a JSON document"),
)

# How torch's weights-only unpickler names a global it refuses, in every version since 2.1:
# "Unsupported class os.system" (2.1-2.3); "Unsupported global: GLOBAL os.system was not an
# allowed global by default" and "unsupported GLOBAL posix.system whose module posix is blocked"
# (2.4 and later, torch.load's own message patterns); a call or construction of something the
# allowlist does not hold.
_REFUSALS = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module"),
    re.compile(r"Unsupported class (\S+)"),
    re.compile(r"(\S+) must be imported to load"),
    re.compile(r"reduce for unrecognized function (.+?)(?: which belongs to|$)", re.MULTILINE),
    re.compile(r"(?:unsupported class|classes allowlisted .* but got) (.+?)$", re.MULTILINE),
)
_UNPICKLER_ERROR = re.compile(
    r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", re.S
)


def foreign(head: bytes) -> str | None:
    """What a file starting with ``head`` is, if it is plainly not a checkpoint."""
    if not head.startswith(ZIP_MAGIC) and len(head) >= 9 and head[8:9] == b"{":
        return "a safetensors file (load it with safetensors.torch.load_file)"
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return what
    return None


def is_torchscript(path: Path) -> bool:
    """Whether the zip file ``path`` is a TorchScript archive (``torch.jit.save``), which
    ``torch.load`` would hand to ``torch.jit.load`` even with ``weights_only=True`` (torch < 2.4).

    Decided as torch does (a ``constants.pkl`` record), from the archive's directory alone.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):  # damaged: torch.load says how
        return False


def refused_global(exc: BaseException) -> str | None:
    """The global (or callable) named by a refusal of torch's weights-only unpickler, if
    ``exc`` is one; None for any other failure."""
    if not isinstance(exc, RuntimeError | pickle.UnpicklingError):
        return None
    for pattern in _REFUSALS:
        found = pattern.search(str(exc))
        if found:
            return found.group(1).strip()
    return None


def explain(exc: BaseException) -> str:
    """What failed, in a few words, for a read that raised ``exc`` (not a refusal)."""
    text = str(exc).strip()
    if isinstance(exc, EOFError):
        return "the file ends early (cut short: an interrupted save or copy)"
    if isinstance(exc, OSError):
        return f"reading the file failed ({type(exc).__name__}: {text})"
    if isinstance(exc, RuntimeError) and "zip archive" in text:
        first = text.split(". ")[0]
        return f"its zip archive is damaged or cut short ({first})"
    if isinstance(exc, pickle.UnpicklingError):
        inner = _UNPICKLER_ERROR.search(text)
        detail = inner.group(1) if inner else text
        return f"its data is not a pickle torch.load(weights_only=True) can read ({detail})"
    return f"{type(exc).__name__}: {text}"
