"""Robust image decoding: any file Pillow can read becomes an RGB image, or a clear error.

Photos come in every mode Pillow knows: grayscale, palette, RGBA, CMYK, 16-bit, with an EXIF
orientation. :func:`load_image` turns each into the upright 8-bit RGB picture a person would see;
files that are empty, truncated, not images, unreadable or decompression bombs raise
:class:`~wsl_images.errors.ImageDecodeError` with a one-line reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageDecodeError

__all__ = ["ImageSource", "expand_paths", "image_extensions", "load_image", "to_rgb", "walk_files"]

# JPEGs are decoded at a reduced DCT scale when that still leaves both sides at least this large:
# twice the 256-pixel resize, so the antialiased resize that follows sees the same detail, while a
# 12-megapixel photo decodes 4x to 16x faster.
_DRAFT_SIZE = (512, 512)
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# A file's path, or its bytes as an open binary file (a member of a tar shard).
ImageSource = Union[str, "os.PathLike[str]", BinaryIO]


def load_image(path: ImageSource, *, draft: bool = False) -> Image.Image:
    """Open ``path`` (or a binary file object) as an upright 8-bit RGB image, EXIF applied.

    ``draft=True`` lets JPEGs decode at a reduced scale that keeps both sides >= 512 pixels,
    which is plenty for 224-pixel models. Raises ``ImageDecodeError`` naming what is wrong.
    """
    try:
        with warnings.catch_warnings():
            # Above Image.MAX_IMAGE_PIXELS Pillow only warns; a file that claims that many
            # pixels is treated as a decompression bomb, as it is above twice that limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if draft and img.format == "JPEG":
                    img.draft(None, _DRAFT_SIZE)
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        msg = f"decompression bomb refused: {exc}"
        raise ImageDecodeError(msg) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(_unidentified_reason(path)) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pillow reports truncated or corrupt data as OSError/ValueError/SyntaxError/EOFError.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        msg = f"cannot decode image: {reason or type(exc).__name__}"
        raise ImageDecodeError(msg) from exc


def _unidentified_reason(path: ImageSource) -> str:
    try:
        if isinstance(path, (str, os.PathLike)):
            size = os.path.getsize(path)
        else:
            size = path.seek(0, os.SEEK_END)
    except OSError:
        size = -1
    if size == 0:
        return "empty file (0 bytes), not an image"
    return "not an image file (Pillow cannot identify its format)"


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB: transparency composited on white, 16-bit scaled, CMYK converted."""
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_BIT_MODES:
        img = _high_bit_to_l(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Transparent pixels carry arbitrary colours (often black); show them as a viewer would.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _high_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer / float) grayscale to 8-bit, keeping the full range."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or arr.max(initial=0) > 255:
        arr = arr / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def image_extensions() -> frozenset[str]:
    """File extensions (lower case, with the dot) of every format Pillow can open."""
    Image.init()  # registers every format plugin, so the list is complete
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def expand_paths(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given (in order), folders expanded recursively to their image files (sorted)."""
    exts = image_extensions()
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(walk_files(p, exts))
        else:
            paths.append(p)
    return paths


def walk_files(folder: Path, suffixes: Collection[str]) -> Iterator[Path]:
    """Files under ``folder`` whose lower-case suffix is in ``suffixes``, in sorted path order.

    The order of ``sorted(folder.rglob("*"))``, produced one folder at a time: memory holds the
    entries of the folders on the current path, not the whole tree. Symlinked folders are not
    followed (as rglob); symlinked files are.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        return
    for entry in entries:
        path = folder / entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from walk_files(path, suffixes)
        elif path.suffix.lower() in suffixes and entry.is_file():
            yield path
