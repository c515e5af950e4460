"""The Python API: Classifier.predict/embed/stream on paths, PIL images and tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from imagegen import photo, write_bad, write_good
from server import FileServer
from torchvision.transforms.functional import pil_to_tensor

from wsl_images import Classifier
from wsl_images.errors import ImageDecodeError, InvalidInputError
from wsl_images.inference import load_image
from wsl_images.zoo import get_weights

Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture(scope="module")
def clf(served: Served) -> Classifier:
    return Classifier(
        "resnet18_ssl", checkpoint_path=served[1]["zip"], batch_size=3, workers=0, device="cpu"
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("img")
    return {**write_good(folder / "good"), **write_bad(folder / "bad")}


def _reference(clf: Classifier, images: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and probabilities the plain way: eval transforms, one image per forward."""
    model = clf.model.float().to(memory_format=torch.contiguous_format)
    head, model.fc = model.fc, torch.nn.Identity()
    preprocess = get_weights("resnet18_ssl").transforms()
    try:
        with torch.inference_mode():
            x = torch.stack([preprocess(load_image(p)) for p in images])
            feats = model(x)
            return feats, head(feats).softmax(1)
    finally:
        model.fc = head
        model.to(memory_format=torch.channels_last)


def test_predict_matches_the_plain_eval_path(clf: Classifier, files: dict[str, Path]) -> None:
    paths = [files[k] for k in ("rgb", "gray", "palette", "rgba", "cmyk", "png16", "exif")]
    preds = clf.predict(paths, top_k=4)
    feats, probs = _reference(clf, paths)
    assert len(preds) == len(paths)
    for pred, row in zip(preds, probs, strict=True):
        values, indices = row.topk(4)
        assert pred.indices == indices.tolist()
        assert pred.probabilities == pytest.approx(values.tolist(), abs=1e-5)
        assert pred.labels == [clf.categories[i] for i in indices.tolist()]
    assert torch.allclose(clf.embed(paths), feats, atol=1e-4)


def test_paths_pil_and_tensors_agree(clf: Classifier, files: dict[str, Path]) -> None:
    img = load_image(files["rgb"])
    u8 = pil_to_tensor(img)
    inputs = [files["rgb"], str(files["rgb"]), img, u8, u8.float() / 255]
    feats = clf.embed(inputs)
    assert feats.shape == (5, 512) and feats.dtype == torch.float32
    for row in feats[1:4]:
        assert torch.allclose(row, feats[0], atol=1e-5)
    # Float input is resized in float, without the uint8 rounding: close, not equal.
    assert torch.allclose(feats[4], feats[0], rtol=1e-2, atol=1e-2)
    gray = pil_to_tensor(img.convert("L"))  # 1-channel tensors are grayscale
    pred_gray = clf.predict([gray, files["gray"]], top_k=3)
    assert pred_gray[0].indices == pred_gray[1].indices


def test_batch_size_does_not_change_results(
    served: Served, files: dict[str, Path], start_method: str
) -> None:
    images = [photo(seed=s) for s in range(5)]
    common = {"checkpoint_path": served[1]["zip"], "device": "cpu"}
    one = Classifier("resnet18_ssl", batch_size=1, workers=0, **common)
    four = Classifier("resnet18_ssl", batch_size=4, workers=2, **common)
    assert torch.allclose(one.embed(images), four.embed(images), atol=1e-4)


def test_bad_inputs_raise_naming_them_and_stream_keeps_the_rest(
    clf: Classifier, files: dict[str, Path]
) -> None:
    inputs = [files["rgb"], files["empty"], files["truncated"], photo()]
    with pytest.raises(ImageDecodeError, match=r"2 of 4 images could not be used \(.*empty\.jpg"):
        clf.predict(inputs)
    outcomes = list(clf.stream_predictions(inputs, top_k=2))
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert [o.error is None for o in outcomes] == [True, False, False, True]
    assert outcomes[1].error == "empty file (0 bytes), not an image"


def test_invalid_arguments(clf: Classifier) -> None:
    with pytest.raises(InvalidInputError, match=r"top_k must be at least 1, got 0"):
        clf.stream_predictions([photo()], top_k=0)  # checked at the call, not at the first result
    with pytest.raises(ImageDecodeError, match=r"CHW with 1 or 3 channels, got shape \(4, 8, 8\)"):
        clf.predict([torch.zeros(4, 8, 8)])
    with pytest.raises(ImageDecodeError, match=r"Unsupported input of type 'int'"):
        clf.predict([3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"Unknown device 'gpu'"):
        Classifier("resnet18_ssl", device="gpu")
    with pytest.raises(InvalidInputError, match=r"Unknown autocast dtype 'half'"):
        Classifier("resnet18_ssl", autocast="half")
    assert clf.predict([]) == []
    assert clf.embed([]).shape == (0, 512)


def test_bfloat16_autocast_on_cpu(served: Served) -> None:
    fast = Classifier(
        "resnet18_ssl", checkpoint_path=served[1]["zip"], autocast="bfloat16", device="cpu"
    )
    feats = fast.embed([photo()])
    assert feats.dtype == torch.float32 and feats.shape == (1, 512)
    assert torch.isfinite(feats).all()


def test_old_spellings_warn_and_still_work(served: Served, clf: Classifier) -> None:
    with pytest.warns(DeprecationWarning, match=r"Classifier\(autocast=\.\.\.\)"):
        old = Classifier(
            "resnet18_ssl", checkpoint_path=served[1]["zip"], dtype="bfloat16", device="cpu"
        )
    assert old.autocast_dtype == torch.bfloat16
    with pytest.warns(DeprecationWarning, match=r"stream_predictions\(images, top_k=K\)"):
        (pred,) = list(clf.stream([photo()], top_k=2))
    assert pred.value is not None and len(pred.value.labels) == 2
    with pytest.warns(DeprecationWarning, match=r"stream_embeddings"):
        (row,) = list(clf.stream([photo()], top_k=None))
    assert isinstance(row.value, torch.Tensor) and row.value.shape == (512,)
