"""A URL's file downloaded with ``check_hash=False``, asked for again with the check on.

``ckpt-epoch-10.pth`` only looks hashed (``10`` is an epoch). Downloaded with the check off, its
sha256 is recorded; asked for again with the check on, it is refused as it is: the error names
the switch, the cached file stays, nothing goes over the network. A released model's file of the
wrong sha256 is corrupt whatever its record: removed and fetched again, as always.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from checkpoints import random_state_dict
from server import FileServer

from wsl_images import HashMismatchError, download, scan_cache, verify_cache
from wsl_images.cache import _records

NAME = "ckpt-epoch-10.pth"
SWITCH = "check_hash=False (CLI: --no-check-hash)"


@pytest.fixture(scope="module")
def epoch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileServer, Path]]:
    """A loopback server holding ``ckpt-epoch-10.pth`` (its sha256 does not start with 10)."""
    root = tmp_path_factory.mktemp("epochs")
    path = root / NAME
    for seed in range(1, 10):  # one seed in 256 gives a hash that starts with 10
        torch.save(random_state_dict("resnet18_ssl", seed=seed), path)
        if not hashlib.sha256(path.read_bytes()).hexdigest().startswith("10"):
            break
    with FileServer(root) as server:
        yield server, path


@pytest.fixture
def unchecked(epoch: tuple[FileServer, Path], isolated_cache: Path) -> tuple[FileServer, str]:
    """``ckpt-epoch-10.pth`` downloaded with the check off; the server's count starts at 0."""
    server, _ = epoch
    server.requests.clear()
    url = f"{server.url}/{NAME}"
    assert download(url, check_hash=False, progress=False) == isolated_cache / NAME
    assert server.requests[f"/{NAME}"] == 1
    server.requests.clear()
    return server, url


@pytest.mark.parametrize("process", ["same", "new"])
@pytest.mark.parametrize("offline", [False, True])
def test_an_unchecked_download_is_refused_as_it_is_without_the_switch(
    process: str,
    offline: bool,
    unchecked: tuple[FileServer, str],
    epoch: tuple[FileServer, Path],
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, url = unchecked
    sha = hashlib.sha256(epoch[1].read_bytes()).hexdigest()
    cached = isolated_cache / NAME
    before = _records.identity(cached)
    if process == "new":  # a new process knows only the record
        monkeypatch.setattr(_records, "_hashed", {})
    if offline:
        monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    with pytest.raises(HashMismatchError) as info:
        download(url, progress=False)
    flat = " ".join(str(info.value).split())
    assert SWITCH in flat and url in flat and f"expected 10... but got {sha}" in flat
    assert "downloaded with the check off" in flat and "is corrupted" not in flat
    assert "It was not loaded, and was kept: nothing was downloaded." in flat
    # Nothing deleted, nothing re-fetched; the switch still gets the cached file.
    assert _records.identity(cached) == before and server.requests == {}
    assert download(url, check_hash=False, progress=False) == cached
    assert server.requests == {}


def test_a_changed_unchecked_download_is_still_fetched_again(
    unchecked: tuple[FileServer, str], isolated_cache: Path
) -> None:
    # Its record no longer vouches for it: it is corrupt whoever's it is. Fetched again, the
    # server's file meets the same check: refused, with the switch named.
    server, url = unchecked
    cached = isolated_cache / NAME
    cached.write_bytes(b"not what was downloaded")
    with pytest.raises(HashMismatchError, match=r"check_hash=False \(CLI: --no-check-hash\)"):
        download(url, progress=False)
    assert server.requests[f"/{NAME}"] == 1
    assert download(url, check_hash=False, progress=False) == cached


def test_verify_keeps_an_intact_unchecked_download(
    unchecked: tuple[FileServer, str], isolated_cache: Path
) -> None:
    cached = isolated_cache / NAME
    record = _records.read(cached)
    assert verify_cache() == []
    assert _records.read(cached) == record  # its record stays: it is still checked on load
    assert [e.path for e in scan_cache()] == [cached]
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0x01
    cached.write_bytes(bytes(data))
    (bad,) = verify_cache()
    assert bad.path == cached and "its record was dropped" in bad.reason


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


def test_a_released_file_downloaded_unchecked_is_removed_and_fetched_again(
    bad_release: tuple[FileServer, str], isolated_cache: Path
) -> None:
    server, url = bad_release
    name = url.rsplit("/", 1)[1]
    assert download("resnet18_ssl", check_hash=False, progress=False) == isolated_cache / name
    with pytest.raises(HashMismatchError, match="is a released model file of known sha256"):
        download("resnet18_ssl", progress=False)
    assert server.requests[f"/{name}"] == 2  # fetched again (and refused again)
    assert not (isolated_cache / name).exists()
    download("resnet18_ssl", check_hash=False, progress=False)
    (bad,) = verify_cache()  # its record does not make it good
    assert bad.path == isolated_cache / name and "does not start with 00000000" in bad.reason
