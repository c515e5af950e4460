"""Generated image files: every mode a photo collection holds, and every kind of bad file."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A small RGB image with some structure (smooth colour blobs)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    return coarse.resize(size, Image.Resampling.BICUBIC)


def halves(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", size, BLUE)
    img.paste(RED, (0, 0, size[0] // 2, size[1]))
    return img


def write_good(folder: Path) -> dict[str, Path]:
    """One file per image mode that must be labelled: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "rgb": folder / "rgb.jpg",
        "gray": folder / "gray.png",
        "palette": folder / "palette.gif",
        "rgba": folder / "rgba.png",
        "cmyk": folder / "cmyk.jpg",
        "png16": folder / "png16.png",
        "exif": folder / "exif.jpg",
    }
    photo().save(files["rgb"], quality=95)
    photo().convert("L").save(files["gray"])
    photo().convert("P", palette=Image.Palette.ADAPTIVE).save(files["palette"])
    rgba = photo().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(files["rgba"])
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(files["cmyk"], quality=95)
    Image.fromarray(np.full((30, 40), 32896, dtype=np.uint16)).save(files["png16"])
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    halves().save(files["exif"], exif=exif, quality=95)
    return files


def write_bad(folder: Path) -> dict[str, Path]:
    """One file per kind of input that must become an error line: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "empty": folder / "empty.jpg",
        "truncated": folder / "truncated.jpg",
        "text": folder / "notes.png",
        "bomb": folder / "bomb.png",
        "missing": folder / "missing.jpg",
    }
    files["empty"].write_bytes(b"")
    buf = io.BytesIO()
    photo((200, 150)).save(buf, format="JPEG", quality=95)
    files["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["text"].write_text("this is not an image\n")
    # 14000 x 14000 = 196M pixels, over Pillow's limit (2 x 89M): a 1-bit PNG of a few KB.
    Image.new("1", (14000, 14000)).save(files["bomb"], optimize=False)
    return files


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """An uncompressed tar of ``members`` (name, bytes), in that order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def webdataset_members(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` samples as webdataset groups them: KEY.jpg beside KEY.json and KEY.txt."""
    members = []
    for i in range(count):
        buf = io.BytesIO()
        photo(seed=seed + i).save(buf, format="JPEG", quality=90)
        key = f"{seed + i:06d}"
        members += [
            (f"{key}.jpg", buf.getvalue()),
            (f"{key}.json", b'{"caption": "blobs"}'),
            (f"{key}.txt", b"blobs"),
        ]
    return members


def write_dataset(root: Path, images: int) -> dict[str, Path]:
    """A folder as a labelling job meets it: ``images`` small JPEGs under ``photos/``, every kind
    of bad file under ``bad/``, and a webdataset tar shard with sidecars and two corrupt members
    (one empty, one truncated) among its 6 images. Returns the bad files too."""
    for i in range(images):
        path = root / "photos" / f"{i // 100:02d}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(seed=i).save(path, quality=90)
    bad = write_bad(root / "bad")
    members = webdataset_members(4, seed=images)
    truncated = bad["truncated"].read_bytes()
    members[3:3] = [("corrupt-empty.jpg", b""), ("corrupt-cut.jpg", truncated)]
    write_tar(root / "web-000000.tar", members)
    return bad
