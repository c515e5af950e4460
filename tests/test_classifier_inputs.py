"""What Classifier methods take: one image alone (a batch of one) or a list; float tensors in
0-1 only; errors that name the methods to use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from imagegen import photo, write_bad
from server import FileServer
from torchvision.transforms.functional import pil_to_tensor

from wsl_images import Classifier
from wsl_images.errors import ImageDecodeError, InvalidInputError

Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture(scope="module")
def clf(served: Served) -> Classifier:
    return Classifier("resnet18_ssl", checkpoint_path=served[1]["zip"], batch_size=4, workers=0)


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("one") / "cat.jpg"
    photo(seed=4).save(path)
    return path


def test_one_image_alone_is_a_batch_of_one(clf: Classifier, jpeg: Path) -> None:
    (expected,) = clf.predict([jpeg], top_k=3)
    row = clf.embed([jpeg])
    image = photo(seed=4)
    for single in (str(jpeg), jpeg, image, pil_to_tensor(image)):
        preds = clf.predict(single, top_k=3)
        assert isinstance(preds, list) and len(preds) == 1, type(single)
        assert clf.embed(single).shape == (1, 512)
        outcomes = list(clf.stream_predictions(single, top_k=3))
        assert [o.index for o in outcomes] == [0]
        assert len(list(clf.stream_embeddings(single))) == 1
    assert clf.predict(str(jpeg), top_k=3) == [expected]
    assert torch.allclose(clf.embed(str(jpeg)), row, atol=1e-6)


def test_an_nchw_tensor_is_a_batch(clf: Classifier) -> None:
    batch = torch.stack([pil_to_tensor(photo(seed=s)) for s in range(3)])
    assert clf.embed(batch).shape == (3, 512)
    assert len(clf.predict(batch)) == 3


def test_inputs_that_are_neither_are_refused_clearly(clf: Classifier) -> None:
    with pytest.raises(InvalidInputError, match=r"shape \(8, 8\) is neither one image"):
        clf.predict(torch.zeros(8, 8))
    with pytest.raises(InvalidInputError, match=r"Image bytes are not an input"):
        clf.embed(b"\xff\xd8\xff")
    with pytest.raises(InvalidInputError, match=r"A generator or iterator: pass list"):
        clf.predict(p for p in ["cat.jpg"])  # type: ignore[arg-type]


def test_a_missing_single_path_is_one_error_naming_it(clf: Classifier, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match=r"^1 of 1 images could not be used \('.*nope\.jpg'"):
        clf.predict(missing)


def test_float_images_outside_0_1_are_refused(clf: Classifier) -> None:
    u8 = pil_to_tensor(photo())
    with pytest.raises(ImageDecodeError, match=r"values in \[0, 1\], got 0 to 2\d\d.*divide"):
        clf.embed([u8.float()])  # 0-255 values as floats: off by thousands if taken
    normalised = (u8.float() / 255 - 0.45) / 0.225
    with pytest.raises(ImageDecodeError, match=r"do not normalise them"):
        clf.embed(normalised)
    nan = u8.float() / 255
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ImageDecodeError, match=r"NaN or infinite"):
        clf.embed(nan)
    # 0-1, give or take rounding: accepted; the stream reports a bad one and keeps the rest
    slightly = (u8.float() / 255 * 1.002 - 0.001).clamp(-0.002, 1.002)
    assert clf.embed([u8.float() / 255, slightly]).shape == (2, 512)
    outcomes = list(clf.stream_embeddings([u8, u8.float(), u8.double() / 255]))
    assert [o.error is None for o in outcomes] == [True, False, True]


def test_errors_name_the_stream_methods(clf: Classifier, tmp_path: Path) -> None:
    bad = write_bad(tmp_path)["empty"]
    with pytest.raises(ImageDecodeError) as info:
        clf.predict([photo(), bad])
    assert "use Classifier.stream_predictions()" in str(info.value)
    assert "stream()" not in str(info.value).replace("stream_predictions()", "")
    with pytest.raises(ImageDecodeError, match=r"use Classifier\.stream_embeddings\(\)"):
        clf.embed([bad])
