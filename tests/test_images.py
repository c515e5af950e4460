"""Robust decoding: every image mode becomes upright RGB, every bad file a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from imagegen import RED, photo, write_bad, write_good
from PIL import Image

from wsl_images.errors import ImageDecodeError, InvalidInputError
from wsl_images.inference import expand_paths, load_image


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_good(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_bad(tmp_path_factory.mktemp("bad"))


def _pixel(img: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(img, dtype=np.int64)[xy[1], xy[0]]


@pytest.mark.parametrize("name", ["rgb", "gray", "palette", "rgba", "cmyk", "png16", "exif"])
def test_every_mode_becomes_rgb(good: dict[str, Path], name: str) -> None:
    img = load_image(good[name])
    assert img.mode == "RGB"
    assert min(img.size) >= 20


def test_grayscale_and_16_bit_keep_their_levels(good: dict[str, Path]) -> None:
    gray = np.asarray(load_image(good["gray"]), dtype=np.int64)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    # 32896 / 65535 is mid-grey: 16-bit values are scaled, not clipped to white.
    assert np.abs(np.asarray(load_image(good["png16"]), dtype=np.int64) - 128).max() <= 1


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    img.paste((200, 0, 0, 255), (0, 0, 5, 10))
    img.save(tmp_path / "a.png")
    rgb = load_image(tmp_path / "a.png")
    assert tuple(_pixel(rgb, (2, 5))) == (200, 0, 0)
    assert tuple(_pixel(rgb, (8, 5))) == (255, 255, 255)
    img.convert("P").save(tmp_path / "p.png")  # palette with a transparent index
    assert tuple(_pixel(load_image(tmp_path / "p.png"), (8, 5))) == (255, 255, 255)


def test_cmyk_colours(good: dict[str, Path]) -> None:
    # CMYK (0, 255, 255, 0) is red.
    assert np.abs(_pixel(load_image(good["cmyk"]), (20, 15)) - (255, 0, 0)).max() < 10


def test_exif_orientation_is_honoured(good: dict[str, Path]) -> None:
    img = load_image(good["exif"])
    # Stored 40x20 with red on the left; orientation 6 shows it 20x40 with red on top.
    assert img.size == (20, 40)
    assert np.abs(_pixel(img, (10, 5)) - RED).max() < 30
    assert np.abs(_pixel(img, (10, 35)) - RED).max() > 100


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", r"^empty file \(0 bytes\), not an image$"),
        ("truncated", r"^cannot decode image: image file is truncated"),
        ("text", r"^not an image file \(Pillow cannot identify its format\)$"),
        ("bomb", r"^decompression bomb refused: Image size \(196000000 pixels\) exceeds"),
        ("missing", r"^cannot decode image: No such file or directory$"),
    ],
)
def test_bad_files_raise_clear_errors(bad: dict[str, Path], name: str, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message) as info:
        load_image(bad[name])
    assert isinstance(info.value, InvalidInputError)


def test_a_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="Is a directory"):
        load_image(tmp_path)


def test_bomb_warning_zone_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Between Pillow's limit and twice it Pillow only warns; that is refused as well.
    photo((40, 30)).save(tmp_path / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match=r"decompression bomb refused: .*1200 pixels"):
        load_image(tmp_path / "x.png")


def test_draft_decodes_big_jpegs_smaller_but_large_enough(tmp_path: Path) -> None:
    photo((2400, 1800)).save(tmp_path / "big.jpg")
    assert load_image(tmp_path / "big.jpg").size == (2400, 1800)
    # 1/2 scale: 1/4 would leave the short side (450) under 512.
    assert load_image(tmp_path / "big.jpg", draft=True).size == (1200, 900)


def test_expand_paths(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/b.JPG", "d/a.png", "d/sub/c.webp", "d/notes.txt", "x.jpg"]:
        (tmp_path / name).write_bytes(b"")
    got = expand_paths([tmp_path / "x.jpg", str(tmp_path / "d"), "nope.jpg"])
    rel = [p.relative_to(tmp_path).as_posix() if p.is_absolute() else str(p) for p in got]
    assert rel == ["x.jpg", "d/a.png", "d/b.JPG", "d/sub/c.webp", "nope.jpg"]
