"""Worker start methods: the pipeline runs its DataLoader workers spawned (macOS, Windows) too."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch
from imagegen import photo, webdataset_members, write_bad, write_good, write_tar
from torchvision.transforms.functional import pil_to_tensor

from wsl_images.errors import InvalidInputError
from wsl_images.inference import TarMember, iter_inputs, make_loader
from wsl_images.inference._start import START_METHOD_ENV, worker_context
from wsl_images.zoo import geometry, get_weights


def test_unset_is_pythons_default_and_a_set_method_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    assert worker_context() is None  # DataLoader then takes Python's default
    monkeypatch.setenv(START_METHOD_ENV, " Spawn ")
    context = worker_context()
    assert context is not None and context.get_start_method() == "spawn"
    loader = make_loader([photo()], [0], _geometry(), batch_size=1, workers=1, pin_memory=False)
    assert loader.multiprocessing_context is context  # type: ignore[attr-defined]
    # No workers, no context: DataLoader refuses one with num_workers=0.
    inline = make_loader([photo()], [0], _geometry(), batch_size=1, workers=0, pin_memory=False)
    assert inline.multiprocessing_context is None  # type: ignore[attr-defined]


def test_a_method_the_platform_lacks_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # Windows
    monkeypatch.setenv(START_METHOD_ENV, "fork")
    match = (
        rf"{START_METHOD_ENV}='fork' is not valid: it takes one of spawn on this platform "
        r"\(how the decoding workers start\)\. Fix it or unset it\."
    )
    with pytest.raises(InvalidInputError, match=match):
        worker_context()
    monkeypatch.setenv(START_METHOD_ENV, "thread")
    with pytest.raises(InvalidInputError, match=r"'thread' is not valid"):
        make_loader([photo()], [0], _geometry(), batch_size=1, workers=1, pin_memory=False)


def test_every_input_kind_crosses_to_workers_as_it_is_decoded_here(
    tmp_path: Path, start_method: str
) -> None:
    """Paths, tar members, PIL images, tensors and bad files: the same batches with workers
    (started by default or spawned) as in this process."""
    good = write_good(tmp_path / "good")
    bad = write_bad(tmp_path / "bad")
    tar = write_tar(tmp_path / "web.tar", webdataset_members(3))
    items: list[object] = [*iter_inputs([str(tmp_path / "good"), str(tar)]), bad["empty"]]
    items += [photo(seed=1), pil_to_tensor(photo(seed=2)), pil_to_tensor(photo(seed=3)) / 255]
    order = list(range(len(items)))
    assert len(good) > 3 and sum(isinstance(i, TarMember) for i in items) == 3

    def batches(workers: int) -> list[tuple[list[int], torch.Tensor | None, list[str | None]]]:
        loader = make_loader(
            items,  # type: ignore[arg-type]
            order,
            _geometry(),
            batch_size=4,
            workers=workers,
            pin_memory=False,
        )
        return [(b.indices, b.images, b.errors) for b in loader]

    here, there = batches(0), batches(2)
    assert [b[0] for b in there] == [b[0] for b in here]
    assert [b[2] for b in there] == [b[2] for b in here]
    assert sum(e is not None for b in there for e in b[2]) == 1  # the empty file, named
    for (_, mine, _), (_, theirs, _) in zip(here, there, strict=True):
        assert mine is not None and theirs is not None and torch.equal(mine, theirs)


def _geometry():  # type: ignore[no-untyped-def]
    return geometry(get_weights("resnet18_ssl").preprocessing)
