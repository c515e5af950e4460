"""Fine-tuned checkpoints: any head size (given, or read from fc), their class names, and
embeddings whatever the head; ImageNet evaluation refuses them clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoints import random_state_dict
from imagegen import photo

from wsl_images import Classifier, evaluate
from wsl_images.cli import main
from wsl_images.errors import InvalidInputError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "images" / "chelsea.jpg"


def _head(classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    state = random_state_dict("resnet18_ssl", seed=seed)
    torch.manual_seed(seed + 1)
    state["fc.weight"], state["fc.bias"] = torch.randn(classes, 512), torch.randn(classes)
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ft")
    two = _head(2)
    paths = {
        # as examples/finetune.py saves it: a training checkpoint with its class names
        "wrapped": root / "checkpoint.pth",
        "plain": root / "plain.pth",
        "backbone": root / "backbone.pth",
    }
    torch.save({"model": two, "epoch": 3, "classes": ["blue", "red"]}, paths["wrapped"])
    torch.save(two, paths["plain"])
    torch.save({k: v for k, v in two.items() if not k.startswith("fc.")}, paths["backbone"])
    return paths


def test_the_head_size_is_read_from_the_checkpoint_with_its_class_names(
    files: dict[str, Path],
) -> None:
    clf = Classifier("resnet18_ssl", checkpoint_path=files["wrapped"], workers=0)
    assert (clf.num_classes, clf.categories) == (2, ["blue", "red"])
    (pred,) = clf.predict([photo()])  # top_k=5 by default: a 2-class head gives both
    assert sorted(pred.labels) == ["blue", "red"] and sorted(pred.indices) == [0, 1]
    assert sum(pred.probabilities) == pytest.approx(1.0, abs=1e-5)
    with torch.inference_mode():
        x = clf.batch_features(clf.geometry(torch.zeros(3, 64, 64, dtype=torch.uint8))[None])
        expected = clf.model.fc(x).softmax(1)[0]
    assert clf.predict([torch.zeros(3, 64, 64, dtype=torch.uint8)])[0].probabilities == (
        pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-5)
    )


def test_labels_default_to_indices_and_can_be_given(files: dict[str, Path]) -> None:
    plain = Classifier("resnet18_ssl", checkpoint_path=files["plain"], num_classes=2, workers=0)
    assert plain.categories == ["0", "1"]
    named = Classifier(
        "resnet18_ssl", checkpoint_path=files["wrapped"], labels=["cat", "dog"], workers=0
    )
    assert named.categories == ["cat", "dog"]  # labels= wins over the checkpoint's classes
    with pytest.raises(InvalidInputError, match=r"labels has 3 names, but the model has 2"):
        Classifier("resnet18_ssl", checkpoint_path=files["plain"], labels=["a", "b", "c"])


def test_num_classes_that_contradicts_the_checkpoint_or_needs_one(files: dict[str, Path]) -> None:
    with pytest.raises(InvalidInputError, match=r"fc of checkpoint .* has 2 outputs"):
        Classifier("resnet18_ssl", checkpoint_path=files["plain"], num_classes=3)
    with pytest.raises(InvalidInputError, match=r"num_classes=2 needs a checkpoint whose fc"):
        Classifier("resnet18_ssl", num_classes=2)


def test_embed_takes_any_head_or_none(files: dict[str, Path], state18_2: Path) -> None:
    images = [photo(seed=1), photo(seed=2)]
    reference = Classifier("resnet18_ssl", checkpoint_path=state18_2, workers=0).embed(images)
    for kind in ("wrapped", "plain", "backbone"):
        clf = Classifier(checkpoint_path=files[kind], workers=0)  # the name inferred too
        assert torch.allclose(clf.embed(images), reference, atol=1e-5), kind
    headless = Classifier("resnet18_ssl", checkpoint_path=files["backbone"], workers=0)
    assert not headless.head
    with pytest.raises(InvalidInputError, match=r"has no fc .*: it can embed images, not classify"):
        headless.predict(images)


@pytest.fixture(scope="module")
def state18_2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same backbone as ``files`` with an ImageNet head: the features to expect."""
    path = tmp_path_factory.mktemp("ref") / "r18.pth"
    torch.save(random_state_dict("resnet18_ssl", seed=0), path)
    return path


def test_classify_and_embed_commands_take_a_fine_tuned_checkpoint(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "labels.jsonl"
    args = ["classify", "--checkpoint", str(files["wrapped"]), "--workers", "0", "--no-progress"]
    assert main([*args, "-o", str(out), str(SAMPLE)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert {p["label"] for p in record["predictions"]} == {"blue", "red"}
    labels = tmp_path / "names.txt"
    labels.write_text("sky\n\nfire\n")  # blank lines are skipped
    plain = ["classify", "--checkpoint", str(files["plain"]), "--workers", "0", "--no-progress"]
    assert (
        main([*plain, "--num-classes", "2", "--labels", str(labels), "-o", str(out), str(SAMPLE)])
        == 0
    )
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert {p["label"] for p in record["predictions"]} == {"sky", "fire"}
    assert main([*plain, "--num-classes", "3", str(SAMPLE)]) == 2
    assert "--num-classes" in capsys.readouterr().err
    assert main([*plain, "--labels", str(tmp_path / "none.txt"), str(SAMPLE)]) == 2
    assert "--labels" in capsys.readouterr().err
    npy = tmp_path / "f.npy"
    embed = ["embed", "--checkpoint", str(files["backbone"]), "--workers", "0", "--no-progress"]
    assert main([*embed, "-o", str(npy), str(SAMPLE)]) == 0
    assert (tmp_path / "f.jsonl").is_file()


def test_evaluate_refuses_a_head_that_is_not_imagenet(
    files: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "val" / "n01440764"
    folder.mkdir(parents=True)
    photo().save(folder / "a.png")
    with pytest.raises(InvalidInputError, match=r"has an fc of 2 outputs: evaluate measures"):
        evaluate("resnet18_ssl", tmp_path / "val", checkpoint_path=files["plain"], workers=0)
