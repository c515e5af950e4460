"""Evaluation folders: the shipped WordNet ids, layout detection, bad layouts, --limit samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from imagegen import photo
from torchvision.models import ResNet50_Weights

from wsl_images.errors import InvalidInputError
from wsl_images.evaluation import imagenet_wnids, sample, scan

# torchvision disambiguates two names that WordNet spells plainly.
_RENAMED = {134: "crane", 639: "maillot"}


def _lemmas() -> list[list[str]]:
    text = Path(__file__).resolve().parents[1] / "wsl_images" / "data" / "imagenet_synsets.txt"
    rows = [line for line in text.read_text("utf-8").splitlines() if not line.startswith("#")]
    return [[w.strip().lower() for w in row.split("\t")[1].split(",")] for row in rows]


def test_wnids_are_the_1000_classes_in_output_order() -> None:
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert list(wnids) == sorted(wnids)  # ILSVRC-2012 numbers its classes in wnid order
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    known = {0: "n01440764", 1: "n01443537", 281: "n02123045", 999: "n15075141"}
    assert {i: wnids[i] for i in known} == known  # tench, goldfish, tabby, toilet tissue


def test_wnids_agree_with_torchvision_category_names() -> None:
    # Output i of the models is torchvision's category i; its name must be a WordNet lemma of
    # wnid i. One shifted or swapped line breaks hundreds of these.
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    lemmas = _lemmas()
    mismatched = [
        (i, name, lemmas[i][:3])
        for i, name in enumerate(categories)
        if _RENAMED.get(i, name).lower() not in lemmas[i]
    ]
    assert mismatched == []


def _folders(root: Path, names: list[str], images: dict[str, int] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).mkdir(parents=True)
    for name, count in (images or {}).items():
        for k in range(count):
            photo(seed=k).save(root / name / f"img{k}.jpg")
    return root


def test_wordnet_layout_with_empty_folders_and_subfolders(tmp_path: Path) -> None:
    root = _folders(tmp_path, ["n01443537", "n01440764", "n15075141"], {"n01440764": 2})
    (root / "n01443537" / "sub").mkdir()
    photo().save(root / "n01443537" / "sub" / "deep.png")
    (root / "n01443537" / "notes.txt").write_text("not an image")
    (root / "README.txt").write_text("ImageNet-R")  # sets ship a README beside the classes
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    found = scan(root)
    assert found.layout == "wordnet"
    assert found.classes == (0, 1, 999)  # the empty n15075141 counts as present
    assert found.folders == {0: "n01440764", 1: "n01443537", 999: "n15075141"}
    assert [f.name for f in found.files] == ["img0.jpg", "img1.jpg", "deep.png"]
    assert found.labels == (0, 0, 1)
    assert found.skipped == 1


def test_class_index_layout(tmp_path: Path) -> None:
    root = _folders(tmp_path, [str(i) for i in range(1000)], {"7": 1, "999": 2, "10": 1})
    found = scan(root)
    assert found.layout == "index"
    assert found.classes == tuple(range(1000))
    assert found.labels == (7, 10, 999, 999)  # numeric class order, not "10" < "7"


@pytest.mark.parametrize(
    ("names", "loose", "says"),
    [
        ([], False, "it holds no class folders"),
        (["cats", "dogs"], False, "2 folders are neither WordNet ids nor 0-999 ('cats', 'dogs')"),
        (["n01440764", "5"], False, "mixes 1 WordNet-id folders ('n01440764') with 1 class-index"),
        (["n01440764", "n99999999"], False, "named like WordNet ids but are not among the 1000"),
        (["0", "1000"], False, "neither WordNet ids nor 0-999 ('1000')"),
        (["0", "007"], False, "neither WordNet ids nor 0-999 ('007')"),
        (["n01440764"], True, "1 image files directly in it ('loose.jpg'), outside any class"),
    ],
)
def test_unrecognised_layouts_say_what_was_found(
    tmp_path: Path, names: list[str], loose: bool, says: str
) -> None:
    root = _folders(tmp_path / "data", names, {n: 1 for n in names})
    if loose:
        photo().save(root / "loose.jpg")
    with pytest.raises(InvalidInputError, match="has no recognised layout") as info:
        scan(root)
    assert says in str(info.value)
    assert "Recognised layouts: one folder per class named by WordNet id" in str(info.value)
    assert "or by class index (0/ ... 999/: ImageNet-V2)" in str(info.value)


def test_missing_folder_and_folders_without_images(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist or is not a folder"):
        scan(tmp_path / "nope")
    _folders(tmp_path / "empty", ["n01440764", "n01443537"])
    with pytest.raises(InvalidInputError, match="has 2 class folders but no image files"):
        scan(tmp_path / "empty")


def test_limit_takes_images_round_robin_across_classes(tmp_path: Path) -> None:
    counts = {"n01440764": 5, "n01443537": 1, "n01484850": 3, "n01491361": 0}
    full = scan(_folders(tmp_path, list(counts), counts))
    few = sample(full, 5)
    assert few.labels == (0, 0, 1, 2, 2)  # round 1: one of each class, round 2: 0 and 2
    names = [f.name for f in few.files]
    assert names == ["img0.jpg", "img1.jpg", "img0.jpg", "img0.jpg", "img1.jpg"]  # path order
    assert few.classes == full.classes  # the class set (and so the logits) does not change
    assert sample(full, 5) == few  # deterministic
    assert sample(full, 100) is full and sample(full, None) is full
    with pytest.raises(InvalidInputError, match="limit must be at least 1"):
        sample(full, 0)
