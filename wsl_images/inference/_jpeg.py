"""Which JPEG files a GPU decodes as the CPU path would: a header read, no pixels decoded.

nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``) decodes baseline 8-bit YCbCr JPEGs in
hardware, in batches. Everything else goes to the CPU path, file by file, so that its output and
its errors stay exactly those of Pillow: not a JPEG; progressive, lossless, arithmetic-coded or
12-bit; grayscale, CMYK/YCCK or RGB-coded (Adobe) JPEGs; chroma layouts other than 4:4:4,
4:2:2 and 4:2:0; an orientation only in XMP; a file cut short (no end marker after the scan:
Pillow refuses it, a GPU would fill in grey); more pixels than Pillow's decompression-bomb limit.

:func:`read_header` walks the markers up to the first scan (a few hundred bytes for most photos)
and reads the EXIF orientation, which the device path applies as Pillow's ``exif_transpose``
does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from PIL import Image

__all__ = ["JpegHeader", "device_decodable", "read_header"]

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_SEQUENTIAL = (0xC0, 0xC1)  # baseline and extended sequential, Huffman-coded
# Other start-of-frame markers (progressive, lossless, hierarchical, arithmetic): the CPU's.
_OTHER_FRAMES = frozenset({0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: markers without a length
# Luma sampling (h, v) with both chroma planes at 1x1: 4:4:4, 4:2:2, 4:2:0.
_LAYOUTS = frozenset({(1, 1), (2, 1), (2, 2)})
_ORIENTATION_TAG = 0x0112
_RGB_IDS = (ord("R"), ord("G"), ord("B"))


@dataclass(frozen=True)
class JpegHeader:
    """What the header of a JPEG says; ``reason`` is why a GPU must not decode it (or None)."""

    width: int = 0
    height: int = 0
    orientation: int = 1  # EXIF orientation, 1-8 (1: as stored)
    reason: str | None = None


def device_decodable(data: bytes) -> bool:
    """Whether ``data`` is a JPEG that a GPU decodes to the pixels the CPU path would see."""
    return read_header(data).reason is None


def read_header(data: bytes) -> JpegHeader:
    """The frame size and orientation of JPEG ``data``, or the reason it stays on the CPU."""
    if data[:2] != b"\xff\xd8":
        return JpegHeader(reason="not a JPEG")
    try:
        return _walk(data)
    except (struct.error, IndexError):
        return JpegHeader(reason="unreadable JPEG header")


def _walk(data: bytes) -> JpegHeader:
    pos, frame, reason = 2, None, None
    orientation: int | None = None  # from the first EXIF block, as Pillow reads it
    while reason is None:
        while data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if data[pos] != 0xFF:
            return JpegHeader(reason="unreadable JPEG header")
        marker = data[pos + 1]
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (_SOI, _EOI):
            return JpegHeader(reason="no image data before the end marker")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        body = data[pos + 4 : pos + 2 + length]
        if len(body) != length - 2:
            return JpegHeader(reason="header cut short")
        if marker == _SOS:
            if frame is None:
                return JpegHeader(reason="scan without a frame header")
            if data.rfind(b"\xff\xd9") < pos:
                return JpegHeader(reason="no end marker: the file is cut short")
            width, height = frame
            return JpegHeader(width, height, orientation or 1)
        if marker in _SEQUENTIAL:
            frame, reason = _frame(body)
        elif marker in _OTHER_FRAMES:
            reason = "progressive, lossless or arithmetic-coded JPEG"
        elif marker == 0xEE and body[:5] == b"Adobe":
            reason = "Adobe JPEG (RGB, CMYK or YCCK colour transform)"
        elif marker == 0xE1 and body[:6] == b"Exif\0\0" and orientation is None:
            orientation = _orientation(body[6:])
            reason = None if orientation else "unusual EXIF orientation entry"
        elif marker == 0xE1 and b"tiff:Orientation" in body:
            reason = "orientation in XMP"
        pos += 2 + length
    return JpegHeader(reason=reason)


def _frame(body: bytes) -> tuple[tuple[int, int] | None, str | None]:
    precision, height, width, count = struct.unpack_from(">BHHB", body)
    if precision != 8:
        return None, f"{precision}-bit JPEG"
    if count != 3:
        return None, "grayscale JPEG" if count == 1 else f"{count}-channel (CMYK) JPEG"
    ids = tuple(body[6 + 3 * c] for c in range(3))
    sampling = [(body[7 + 3 * c] >> 4, body[7 + 3 * c] & 15) for c in range(3)]
    if ids == _RGB_IDS:
        return None, "RGB-coded JPEG"
    if sampling[1:] != [(1, 1), (1, 1)] or sampling[0] not in _LAYOUTS:
        return None, f"chroma sampling {sampling}"
    if width == 0 or height == 0:
        return None, "no frame size"
    if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
        return None, "more pixels than Pillow's limit"
    return (width, height), None


def _orientation(tiff: bytes) -> int:
    """The Orientation tag of IFD0 of an EXIF block: 1-8 (1 when absent, or a value Pillow
    ignores); 0 for an entry read otherwise than as one SHORT (left to Pillow)."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 0
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for k in range(count):
        tag, kind, number, value = struct.unpack_from(order + "HHI4s", tiff, ifd + 2 + 12 * k)
        if tag != _ORIENTATION_TAG:
            continue
        if kind != 3 or number != 1:  # SHORT, one value
            return 0
        (found,) = struct.unpack_from(order + "H", value)
        return found if 1 <= found <= 8 else 1
    return 1
