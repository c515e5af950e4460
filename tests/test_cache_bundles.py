"""Derived folders (cache/_bundles.py): large data derived from a source, kept by key, published
whole, each file hashed once and then trusted by its record; verify hashes in full; clear removes
it with its source. Model-agnostic: the files here are plain bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from server import FileServer
from test_cache_readonly import ReadOnly, fresh_process

from wsl_images import clear_cache, scan_cache, verify_cache
from wsl_images.cache import (
    _records,
    content_source,
    derived_path,
    download_url,
    keep_derived_files,
    load_derived_files,
)
from wsl_images.cache._bundles import MANIFEST
from wsl_images.cli import main
from wsl_images.errors import InvalidInputError, WslImagesError

Served = tuple[FileServer, dict[str, Path]]
KEY = "graph-v1"
GRAPH, DATA = b"a graph that names its data file", bytes(range(256)) * 4096  # 1 MiB


class Maker:
    """Writes a graph + data pair into the folder it is given; counts its calls."""

    def __init__(self, data: bytes = DATA) -> None:
        self.calls, self.data = 0, data

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / "model.graph").write_bytes(GRAPH)
        (folder / "model.graph.data").write_bytes(self.data)


@pytest.fixture
def source(served: Served) -> Path:
    server, files = served
    return download_url(f"{server.url}/{files['zip'].name}", progress=False)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = _records.sha256_of
    monkeypatch.setattr(_records, "sha256_of", lambda p: seen.append(Path(p).name) or real(p))
    return seen


def _flip(path: Path, at: int = 1000) -> None:
    """One byte changed in place, through the file system (same inode, same size)."""
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x01]))


def test_made_once_then_found_without_a_hash(
    source: Path, hashed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make = Maker()
    folder = keep_derived_files(source, KEY, make)
    assert folder == derived_path(source, KEY) and make.calls == 1
    assert (folder / "model.graph.data").read_bytes() == DATA
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source_sha256"] == _records.sha256_of(source)
    assert sorted(manifest["files"]) == ["model.graph", "model.graph.data"]
    assert manifest["files"]["model.graph.data"]["size"] == len(DATA)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp folder left
    hashed.clear()
    fresh_process(monkeypatch)  # a later run: only records vouch for the files
    assert keep_derived_files(source, KEY, make) == folder and make.calls == 1
    assert load_derived_files(source, KEY) == folder
    assert hashed == []  # trusted by identity: no file hashed again


def test_a_flipped_byte_is_never_loaded_it_is_made_again(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make = Maker()
    folder = keep_derived_files(source, KEY, make)
    data = folder / "model.graph.data"
    stat = data.stat()
    _flip(data)
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back: ctime tells
    fresh_process(monkeypatch)
    assert load_derived_files(source, KEY) is None
    assert not folder.exists()  # removed, not left for anyone to load
    assert keep_derived_files(source, KEY, make) == folder and make.calls == 2
    assert data.read_bytes() == DATA


def test_bit_rot_under_an_intact_identity_is_caught_by_verify(source: Path) -> None:
    folder = keep_derived_files(source, KEY, Maker())
    data = folder / "model.graph.data"
    _flip(data)
    # The record vouches for the file as it is now (a disk that rots bits changes no stat):
    # loads trust it; `cache verify` hashes every file in full regardless.
    good = json.loads((folder / MANIFEST).read_text())["files"]["model.graph.data"]["sha256"]
    _records.remember(data, good, at=folder / ".model.graph.data.verified")
    assert load_derived_files(source, KEY) == folder
    (bad,) = verify_cache()
    assert bad.path == folder and "model.graph.data does not match its manifest" in bad.reason
    assert not folder.exists()


def test_missing_extra_or_foreign_files_fail(source: Path) -> None:
    make = Maker()
    folder = keep_derived_files(source, KEY, make)
    (folder / "model.graph").unlink()
    assert load_derived_files(source, KEY) is None and not folder.exists()
    folder = keep_derived_files(source, KEY, make)
    (folder / "planted.bin").write_bytes(b"not made by the maker")
    assert load_derived_files(source, KEY) is None and not folder.exists()
    folder = keep_derived_files(source, KEY, make)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["source_sha256"] = "0" * 64  # made from another file of that name
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert load_derived_files(source, KEY) is None and make.calls == 3


def test_a_failed_make_leaves_nothing(source: Path) -> None:
    def fails(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"half")
        raise RuntimeError("the exporter gave up")

    with pytest.raises(RuntimeError, match="gave up"):
        keep_derived_files(source, KEY, fails)
    assert list(derived_path(source, KEY).parent.iterdir()) == []
    with pytest.raises(WslImagesError, match="plain files only"):
        keep_derived_files(source, KEY, lambda folder: (folder / "sub").mkdir())
    assert list(derived_path(source, KEY).parent.iterdir()) == []


def test_a_read_only_cache_refuses_a_bad_folder(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = keep_derived_files(source, KEY, Maker())
    _flip(folder / "model.graph.data")
    fresh_process(monkeypatch)
    ReadOnly(source.parent, monkeypatch)
    assert load_derived_files(source, KEY) is None  # not used, though it cannot be removed
    with pytest.raises(WslImagesError, match="Point WSL_IMAGES_CACHE at a writable folder"):
        keep_derived_files(source, KEY, Maker())
    assert folder.exists()  # left as it was: never loaded


def test_scan_verify_and_clear_cover_derived_folders(
    source: Path, hashed: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = keep_derived_files(source, KEY, Maker())
    (entry,) = scan_cache()
    (derived,) = entry.derived
    assert (derived.path, derived.key, derived.folder, derived.verified) == (
        folder,
        KEY,
        True,
        True,
    )
    assert derived.size >= len(DATA) + len(GRAPH)
    assert main(["cache", "list"]) == 0
    assert f"+ {folder.name}" in capsys.readouterr().out
    hashed.clear()
    assert verify_cache() == []
    assert {"model.graph", "model.graph.data"} <= set(hashed)  # hashed in full, records or not
    removed = clear_cache([source.name])
    assert source in removed and folder in removed and not folder.exists()


def test_a_file_outside_the_cache_is_a_source_by_its_sha256(
    isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = "ab" * 32
    stand_in = content_source(sha)
    assert stand_in == isolated_cache / f"sha256-{sha}" and not stand_in.exists()
    folder = keep_derived_files(stand_in, KEY, Maker())
    assert load_derived_files(stand_in, KEY) == folder
    assert json.loads((folder / MANIFEST).read_text())["source_sha256"] == sha
    (entry,) = scan_cache()
    assert entry.content_only and entry.derived[0].verified and entry.size == 0
    assert verify_cache() == [] and folder.exists()  # good: tied to the sha256 in its name
    assert main(["cache", "list"]) == 0
    assert "a file outside the cache, by its sha256" in capsys.readouterr().out
    assert main(["cache", "clear", stand_in.name]) == 0  # by the name `cache list` shows
    assert not folder.exists()
    with pytest.raises(InvalidInputError, match="not a sha256"):
        content_source("../etc")


def test_a_read_only_cache_without_the_folder_says_so(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ReadOnly(source.parent, monkeypatch)
    make = Maker()
    with pytest.raises(WslImagesError, match=r"Cannot keep .*~graph-v1 in the cache folder"):
        keep_derived_files(source, KEY, make)
    assert make.calls == 0  # refused before any work
