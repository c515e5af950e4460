"""A read-only shared cache: a cluster's pre-filled folder, mounted read-only, and its copies.

Tests run as root, where permissions stop no write, so the read-only mount is simulated: every
call that would change something under the folder fails with EROFS, as on a read-only mount.
A copy (another inode) is trusted on no timestamp: it is hashed once per process, silently,
unless ``cache verify`` ran on it while it was writable. A new process is simulated by
forgetting what this one hashed (``fresh_process``).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import pathlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from server import FileServer

from wsl_images import get_model, verify_cache
from wsl_images.cache import _records
from wsl_images.cache._paths import derived_path, obsolete_copies, record_path
from wsl_images.errors import HashMismatchError
from wsl_images.models import checkpoint_file, source_sha256

Served = tuple[FileServer, dict[str, Path]]
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class ReadOnly:
    """Makes ``folder`` read-only for this process: writes fail with EROFS; ``refused`` lists
    what was tried."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder, self.refused = str(folder.resolve()), []
        self.refused: list[str] = []
        self._patch(monkeypatch)

    def _inside(self, path: object) -> bool:
        if isinstance(path, int):
            return False
        return os.path.abspath(os.fspath(path)).startswith(self.folder)  # type: ignore[arg-type]

    def _deny(self, what: str, path: object) -> None:
        if self._inside(path):
            self.refused.append(f"{what} {path}")
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))  # type: ignore[arg-type]

    def _patch(self, mp: pytest.MonkeyPatch) -> None:
        def guard(name: str, real: Callable[..., object]) -> Callable[..., object]:
            def call(path: object, *args: object, **kwargs: object) -> object:
                self._deny(name, path)
                return real(path, *args, **kwargs)

            return call

        for name in ("unlink", "remove", "mkdir", "rmdir", "utime", "truncate", "chmod"):
            mp.setattr(os, name, guard(name, getattr(os, name)))
        for name in ("replace", "rename"):
            real2 = getattr(os, name)

            def two(
                src: object,
                dst: object,
                *a: object,
                _r: Callable[..., object] = real2,
                _n: str = name,
                **k: object,
            ) -> object:
                self._deny(_n, src)
                self._deny(_n, dst)
                return _r(src, dst, *a, **k)

            mp.setattr(os, name, two)
        real_open = os.open

        def os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
            if flags & _WRITE_FLAGS:
                self._deny("open", path)
            return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

        mp.setattr(os, "open", os_open)
        real_io_open = io.open

        def io_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
            if any(c in mode for c in "wax+"):
                self._deny("open", file)
            return real_io_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

        mp.setattr(io, "open", io_open)
        mp.setattr(builtins, "open", io_open)
        # Python 3.10's pathlib calls os through an accessor that kept the functions it saw at
        # import (3.11 calls os itself): point it at the guarded ones too.
        accessor = getattr(pathlib, "_NormalAccessor", None)
        if accessor is not None:
            for name in ("unlink", "rmdir", "mkdir", "rename", "replace", "chmod", "utime"):
                if hasattr(accessor, name):
                    mp.setattr(accessor, name, staticmethod(getattr(os, name)))


@pytest.fixture
def prefilled(
    served: Served, register_file: Callable[[str, str], None], isolated_cache: Path
) -> Path:
    """A cache where resnet18_ssl (a legacy-format file) was downloaded and loaded once: its
    record and layout are kept, as on the machine that filled a cluster's shared folder."""
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")
    get_model("resnet18_ssl", progress=False)
    path = isolated_cache / files["legacy"].name
    assert derived_path(path).is_file() and _records.read(path) is not None
    return path


def _copy(source_folder: Path, dest: Path, *, keep_times: bool) -> None:
    """``cp -rp`` (keep_times) or plain ``cp -r`` of a cache folder."""
    shutil.copytree(source_folder, dest, copy_function=shutil.copy2 if keep_times else shutil.copy)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every full hash of a cached file."""
    seen: list[Path] = []
    real = _records.sha256_of
    monkeypatch.setattr(_records, "sha256_of", lambda p: seen.append(p) or real(p))
    return seen


def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget what this process hashed, as a new process would not know it."""
    monkeypatch.setattr(_records, "_hashed", {})
    monkeypatch.setattr(_records, "_bad", {})


_AVOID = "run `wsl-images cache verify` on"


def _load(state: dict[str, torch.Tensor]) -> None:
    model = get_model("resnet18_ssl", progress=False)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("how", ["in-place", "cp-p", "cp"])
def test_a_read_only_cache_loads_without_warnings(
    how: str,
    prefilled: Path,
    isolated_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    hashed: list[Path],
    state18: dict[str, torch.Tensor],
) -> None:
    folder = isolated_cache
    if how != "in-place":
        folder = tmp_path / "shared"
        _copy(isolated_cache, folder, keep_times=how == "cp-p")
        monkeypatch.setenv("WSL_IMAGES_CACHE", str(folder))
    fresh_process(monkeypatch)
    ro = ReadOnly(folder, monkeypatch)
    with caplog.at_level(logging.INFO, logger="wsl_images"):
        for _ in range(3):
            _load(state18)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    source = folder / prefilled.name
    # Nothing that does not exist is removed, nothing exists that should be.
    assert not any(p.exists() for p in obsolete_copies(source))
    assert not any("unlink" in r for r in ro.refused)
    # A copy, with its times (cp -p, rsync -a) or without, is hashed once per process (its
    # record cannot be rewritten), and an INFO line says how to avoid it; the folder itself
    # (its inode and ctime are the recorded ones) is not hashed at all.
    avoid = [r.getMessage() for r in caplog.records if _AVOID in r.getMessage()]
    if how == "in-place":
        assert hashed == [] and avoid == []
    else:
        assert hashed == [source]
        (line,) = avoid
        assert f"{_AVOID} {str(folder)!r} while it is writable" in line


@pytest.mark.parametrize("how", ["cp-p", "cp"])
def test_a_copy_verified_while_writable_loads_read_only_without_a_hash(
    how: str,
    prefilled: Path,
    isolated_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    hashed: list[Path],
    state18: dict[str, torch.Tensor],
) -> None:
    folder = tmp_path / "shared"
    _copy(isolated_cache, folder, keep_times=how == "cp-p")
    source = folder / prefilled.name
    before = _records.read(source)
    assert before is not None and before.identity != _records.identity(source)  # another inode
    assert verify_cache(cache_dir=folder) == []
    after = _records.read(source)  # re-keyed to the copy's own identity, same sha256
    assert after is not None and after.identity == _records.identity(source)
    assert after.sha256 == before.sha256
    hashed.clear()
    fresh_process(monkeypatch)  # another process, on the read-only mount
    monkeypatch.setenv("WSL_IMAGES_CACHE", str(folder))
    ro = ReadOnly(folder, monkeypatch)
    with caplog.at_level(logging.INFO, logger="wsl_images"):
        for _ in range(3):
            _load(state18)
    assert hashed == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert ro.refused == []  # nothing even tried to write


def test_a_writable_copy_is_hashed_once_then_trusted(
    prefilled: Path,
    isolated_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hashed: list[Path],
) -> None:
    copy = tmp_path / "copy"
    _copy(isolated_cache, copy, keep_times=True)
    source = copy / prefilled.name
    record = _records.read(source)
    assert record is not None
    monkeypatch.setenv("WSL_IMAGES_CACHE", str(copy))
    fresh_process(monkeypatch)
    assert checkpoint_file("resnet18_ssl", None, progress=False, check_hash=True)[0] == source
    assert hashed == [source]  # its first load hashed it, and re-keyed its record
    rewritten = _records.read(source)
    assert rewritten is not None and rewritten.identity == _records.identity(source)
    assert rewritten.sha256 == record.sha256
    fresh_process(monkeypatch)
    assert checkpoint_file("resnet18_ssl", None, progress=False, check_hash=True)[0] == source
    assert hashed == [source]


def test_a_record_of_an_older_version_still_reads(
    prefilled: Path,
    isolated_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hashed: list[Path],
) -> None:
    # Older versions wrote the device and 16 sampled blocks, to trust a copy of the same size
    # and mtime: the keys are ignored, the record trusts the file it was made for, not a copy.
    record_file = record_path(prefilled)
    data = json.loads(record_file.read_text())
    data.update(device=os.stat(prefilled).st_dev, sample="ab" * 32)
    record_file.write_text(json.dumps(data))
    assert _records.read(prefilled) == _records.Record(data["sha256"], tuple(data["identity"]))
    copy = tmp_path / "copy"
    _copy(isolated_cache, copy, keep_times=True)
    fresh_process(monkeypatch)
    assert source_sha256("resnet18_ssl") == data["sha256"]
    assert hashed == []
    monkeypatch.setenv("WSL_IMAGES_CACHE", str(copy))
    ReadOnly(copy, monkeypatch)
    assert source_sha256("resnet18_ssl") == data["sha256"]
    assert hashed == [copy / prefilled.name]


def _rewrite_keeping_times(path: Path, at: int) -> None:
    """Change one byte and set the times back: what only ctime (or the bytes) can tell."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    ("where", "at"),
    [("in-place", "middle"), ("copy", "middle"), ("copy", "first-block")],
)
def test_a_changed_file_with_its_times_set_back_is_never_trusted(
    where: str,
    at: str,
    prefilled: Path,
    isolated_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hashed: list[Path],
) -> None:
    # In place, ctime tells (a byte anywhere). A copy keeps only size and mtime, which prove
    # nothing: it is hashed whatever its times say.
    folder = isolated_cache
    if where == "copy":
        folder = tmp_path / "copy"
        _copy(isolated_cache, folder, keep_times=True)
        monkeypatch.setenv("WSL_IMAGES_CACHE", str(folder))
    source = folder / prefilled.name
    size = source.stat().st_size
    offset = {"middle": size // 2, "first-block": 100}[at]
    _rewrite_keeping_times(source, at=offset)
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    fresh_process(monkeypatch)
    with pytest.raises(HashMismatchError, match="is corrupted"):
        checkpoint_file("resnet18_ssl", None, progress=False, check_hash=True)[0]
    assert hashed == [source]


def test_a_bad_file_whose_record_cannot_be_dropped_is_not_trusted_again(
    prefilled: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bit rot: the bytes changed, the identity the record holds did not (simulated by making the
    # record vouch for the changed file with the old sha256).
    record = _records.read(prefilled)
    assert record is not None
    _rewrite_keeping_times(prefilled, at=100)
    _records.remember(prefilled, record.sha256)
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    ReadOnly(isolated_cache, monkeypatch)
    (bad,) = [b for b in verify_cache() if b.path == prefilled]
    assert "its record could not be dropped" in bad.reason
    assert "read-only file system" in bad.reason
    with pytest.raises(HashMismatchError, match="is corrupted"):  # this process knows it now
        source_sha256("resnet18_ssl")
