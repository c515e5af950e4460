"""``check_hash`` through every entry point that takes a checkpoint, and what a refusal says.

torch.hub's rule reads ``ckpt-epoch-10.pth`` as a file whose sha256 starts with ``10``. A user's
URL whose name only looks hashed is refused by default, the refusal names the switch
(``check_hash=False`` / ``--no-check-hash``), and the switch works from the API and the CLI; a
released model file of the wrong hash is called corrupt, and the switch is not suggested.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from checkpoints import random_state_dict
from evalsets import write_photos
from server import FileServer

from wsl_images import Classifier, HashMismatchError, evaluate, export_model, get_model
from wsl_images.cli import main
from wsl_images.evaluation import imagenet_wnids

NAME = "ckpt-epoch-10.pth"
SWITCH = "check_hash=False (CLI: --no-check-hash)"


class Checkpoint:
    """A loopback server holding ``ckpt-epoch-10.pth`` (its sha256 does not start with 10)."""

    def __init__(self, server: FileServer, path: Path) -> None:
        self.server = server
        self.path = path
        self.url = f"{server.url}/{path.name}"
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkpoint]:
    root = tmp_path_factory.mktemp("epochs")
    path = root / NAME
    for seed in range(1, 10):  # one seed in 256 gives a hash that starts with 10
        torch.save(random_state_dict("resnet18_ssl", seed=seed), path)
        if not hashlib.sha256(path.read_bytes()).hexdigest().startswith("10"):
            break
    with FileServer(root) as server:
        yield Checkpoint(server, path)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four photos filed under two ImageNet classes (an evaluate folder, and classify inputs)."""
    root = tmp_path_factory.mktemp("evalset")
    photos = write_photos(root / "pool", 4)
    for i, photo in enumerate(photos):
        folder = root / "data" / imagenet_wnids()[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / photo.name).write_bytes(photo.read_bytes())
    return root / "data"


def _assert_names_the_switch(text: str, ckpt: Checkpoint) -> None:
    flat = " ".join(text.split())
    assert ckpt.url in flat and "expected 10... but got" in flat and ckpt.sha256 in flat
    assert SWITCH in flat, flat
    assert "If that part is not a hash (an epoch, step or version number)" in flat
    assert "you trust where the file comes from" in flat  # when it is safe


def _cache_holds_no_checkpoint(cache: Path) -> bool:
    return not (cache / NAME).exists()


# -- the API ------------------------------------------------------------------------------------

API: dict[str, Callable[[Checkpoint, Path, Path, bool], object]] = {
    "Classifier": lambda c, data, out, check: Classifier(
        "resnet18_ssl", checkpoint_path=c.url, check_hash=check, device="cpu", workers=0,
        progress=False,
    ).predict(sorted(data.rglob("*.jpg"))[:2], top_k=2),
    "evaluate": lambda c, data, out, check: evaluate(
        "resnet18_ssl", data, checkpoint_path=c.url, check_hash=check, device="cpu",
        workers=0, progress=False,
    ),
    "export_model": lambda c, data, out, check: export_model(
        "resnet18_ssl", out / "m.pt", format="torchscript", checkpoint_path=c.url,
        check_hash=check, image_size=64, progress=False,
    ),
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("entry", list(API))
def test_api_refuses_a_name_that_only_looks_hashed_and_names_the_switch(
    entry: str, ckpt: Checkpoint, images: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(HashMismatchError) as info:
        API[entry](ckpt, images, out, True)
    _assert_names_the_switch(str(info.value), ckpt)
    assert _cache_holds_no_checkpoint(isolated_cache) and list(out.iterdir()) == []
    result = API[entry](ckpt, images, out, False)
    assert (isolated_cache / NAME).is_file()
    if entry == "Classifier":
        assert isinstance(result, list) and len(result) == 2 and len(result[0].labels) == 2
    elif entry == "evaluate":
        assert result.count == 4 and result.checkpoint == ckpt.url  # type: ignore[attr-defined]
    else:
        assert sorted(p.name for p in out.iterdir()) == ["m.pt"]


def test_check_hash_is_a_typed_keyword_only_parameter() -> None:
    import inspect

    for fn in (Classifier, evaluate, export_model):
        param = inspect.signature(fn).parameters["check_hash"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is True
        assert param.annotation in (bool, "bool")
        assert "check_hash" in (fn.__doc__ or "")


def test_the_switch_loads_the_same_weights(ckpt: Checkpoint) -> None:
    model = get_model("resnet18_ssl", checkpoint_path=ckpt.url, check_hash=False, progress=False)
    state = torch.load(ckpt.path, weights_only=True)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_offline_the_cached_file_is_refused_without_the_switch(
    ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    get_model("resnet18_ssl", checkpoint_path=ckpt.url, check_hash=False, progress=False)
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    with pytest.raises(HashMismatchError) as info:
        get_model("resnet18_ssl", checkpoint_path=ckpt.url, progress=False)
    assert SWITCH in " ".join(str(info.value).split())
    get_model("resnet18_ssl", checkpoint_path=ckpt.url, check_hash=False, progress=False)


# -- the CLI ------------------------------------------------------------------------------------


def _argv(command: str, ckpt: Checkpoint, images: Path, out: Path) -> list[str]:
    photo = str(sorted(images.rglob("*.jpg"))[0])
    common = ["--checkpoint", ckpt.url]
    return {
        "classify": ["classify", "--model", "resnet18_ssl", *common, "--workers", "0",
                     "--no-progress", "--device", "cpu", "--format", "jsonl",
                     "-o", str(out / "c.jsonl"), photo],
        "embed": ["embed", "--model", "resnet18_ssl", *common, "--workers", "0",
                  "--no-progress", "--device", "cpu", "-o", str(out / "e.jsonl"), photo],
        "evaluate": ["evaluate", "resnet18_ssl", "--data", str(images), *common,
                     "--workers", "0", "--no-progress", "--device", "cpu",
                     "-o", str(out / "r.json")],
        "export": ["export", "resnet18_ssl", "--format", "torchscript", *common,
                   "--image-size", "64", "-o", str(out / "m.pt")],
    }[command]  # fmt: skip


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("command", ["classify", "embed", "evaluate", "export"])
def test_cli_refuses_by_default_and_works_with_no_check_hash(
    command: str,
    ckpt: Checkpoint,
    images: Path,
    tmp_path: Path,
    isolated_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = _argv(command, ckpt, images, tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"wsl-images {command}: error: ")
    _assert_names_the_switch(err, ckpt)
    assert list(tmp_path.iterdir()) == [isolated_cache] or list(tmp_path.iterdir()) == []
    assert main([*argv, "--no-check-hash"]) == 0, capsys.readouterr().err
    written = {p.name for p in tmp_path.iterdir()} - {isolated_cache.name}
    assert written == {
        "classify": {"c.jsonl"}, "embed": {"e.jsonl"}, "evaluate": {"r.json"}, "export": {"m.pt"}
    }[command]  # fmt: skip


@pytest.mark.parametrize("command", ["classify", "embed"])
def test_sharded_run_records_the_checkpoint_and_resumes_with_no_check_hash(
    command: str, ckpt: Checkpoint, images: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "run"
    argv = [command, "--model", "resnet18_ssl", "--checkpoint", ckpt.url, "--workers", "0",
            "--no-progress", "--output-dir", str(out), "--shard-size", "2",
            str(images)]  # fmt: skip
    assert main(argv) == 1
    _assert_names_the_switch(capsys.readouterr().err, ckpt)
    assert not out.exists() or not (out / "run.json").exists()
    assert main([*argv, "--no-check-hash"]) == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["checkpoint_sha256"] == ckpt.sha256 and run["inputs"] == 4
    assert (out / "_SUCCESS").is_file()
    shard = out / "shard-000001.jsonl"
    shard.unlink()  # resume writes exactly the missing shard
    assert main([*argv, "--no-check-hash"]) == 0
    assert "resumed: 1 of 2 shards were complete already" in capsys.readouterr().err
    assert shard.is_file() and len(shard.read_text().splitlines()) == 2


# -- released files: corrupt, and the switch is not the answer ----------------------------------


@pytest.fixture
def bad_release(
    tmp_path: Path, register_file: Callable[[str, str], None]
) -> Iterator[tuple[FileServer, str]]:
    """resnet18_ssl registered at a loopback URL whose file does not match its name."""
    root = tmp_path / "release"
    root.mkdir()
    name = "semi_supervised_resnet18-00000000.pth"
    torch.save(random_state_dict("resnet18_ssl", seed=3), root / name)
    with FileServer(root) as server:
        url = f"{server.url}/{name}"
        register_file("resnet18_ssl", url)
        yield server, url


def _assert_called_corrupt(text: str) -> None:
    flat = " ".join(text.split())
    assert "is a released model file of known sha256, so this download is corrupt" in flat
    assert "check_hash" not in flat and "--no-check-hash" not in flat


def test_a_released_file_of_the_wrong_hash_is_corrupt_and_gets_no_switch(
    bad_release: tuple[FileServer, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, url = bad_release
    with pytest.raises(HashMismatchError) as info:
        get_model("resnet18_ssl", progress=False)
    _assert_called_corrupt(str(info.value))
    # The same file named by its URL is still a released file: no switch offered either.
    with pytest.raises(HashMismatchError) as info:
        Classifier("resnet18_ssl", checkpoint_path=url, progress=False, device="cpu")
    _assert_called_corrupt(str(info.value))
    photo = write_photos(tmp_path / "p", 1)[0]
    argv = ["classify", "--model", "resnet18_ssl", "--workers", "0", "--device", "cpu", str(photo)]
    assert main(argv) == 1
    _assert_called_corrupt(capsys.readouterr().err)


def test_an_offline_released_file_of_the_wrong_hash_gets_no_switch(
    bad_release: tuple[FileServer, str], isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = bad_release
    isolated_cache.mkdir()
    (isolated_cache / url.rsplit("/", 1)[1]).write_bytes(b"not the released file")
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    with pytest.raises(HashMismatchError, match="is corrupted: its sha256 is") as info:
        get_model("resnet18_ssl", progress=False)
    assert "check_hash" not in str(info.value) and "wsl-images cache clear" in str(info.value)
