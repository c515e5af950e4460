"""A cache folder shared by hosts (NFS, Lustre): killed downloads of other hosts, full disks."""

from __future__ import annotations

import collections
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultserver import FaultServer

from wsl_images import cache
from wsl_images._util import _atomic as atomic
from wsl_images._util import _temps as temps
from wsl_images.cache import TransferOptions, _fileio, _transfer
from wsl_images.errors import DownloadError

SIZE = 3 << 20
OPTS = TransferOptions(retries=1, backoff=0.01, parts=1)
OTHER = "node17.4026531836"  # another host of the cluster (and its PID namespace)


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("blob") / f"blob-{hashlib.sha256(data).hexdigest()[:8]}.bin"
    path.write_bytes(data)
    return path


@pytest.fixture
def server(blob: Path) -> Iterator[FaultServer]:
    with FaultServer({blob.name: blob}) as srv:
        yield srv


def _leftover(folder: Path, name: str, *, age_s: float, size: int = 0, beat: bool = True) -> Path:
    """A temp file another host's writer left ``age_s`` ago (by this machine's clock)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}~{OTHER}~4242~{'hb' if beat else ''}0badf00d.part"
    path.write_bytes(b"\1" * size)  # written, not sparse: the space it takes is its size
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_other_hosts_killed_downloads_are_removed_after_minutes_not_a_day(tmp_path: Path) -> None:
    killed = _leftover(tmp_path, "a.pth", age_s=temps.BEAT_LOST_S + 60)
    running = _leftover(tmp_path, "b.pth", age_s=60)  # within its heartbeat window: alive
    no_beat = _leftover(tmp_path, "c.pth", age_s=temps.BEAT_LOST_S + 60, beat=False)
    assert atomic.cleanup_stale(tmp_path) == [killed]
    assert running.exists() and no_beat.exists()  # writers without heartbeat: a day, as before


@pytest.mark.parametrize("skew_s", [3600.0, -3600.0], ids=["clock-ahead", "clock-behind"])
def test_silence_is_measured_by_the_file_systems_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skew_s: float
) -> None:
    # On a network file system the server stamps the files. A host whose clock is an hour off
    # must neither remove another host's live download nor keep a killed one for an hour more.
    killed = _leftover(tmp_path, "a.pth", age_s=temps.BEAT_LOST_S + 60)
    running = _leftover(tmp_path, "b.pth", age_s=5)
    real = time.time
    monkeypatch.setattr(temps.time, "time", lambda: real() + skew_s)
    assert atomic.cleanup_stale(tmp_path) == [killed]
    assert running.exists()
    assert [p.name for p in tmp_path.iterdir()] == [running.name]  # the clock probe is gone


def test_a_heartbeat_writer_keeps_its_temp_file_fresh_while_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(temps, "BEAT_S", 0.02)
    with atomic.atomic_file(tmp_path / "x.pth", heartbeat=True) as tmp:
        assert "~hb" in tmp.path.name
        os.utime(tmp.path, (0, 0))  # as if silent since 1970: only the heartbeat can refresh it
        deadline = time.monotonic() + 30
        while tmp.path.stat().st_mtime == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tmp.path.stat().st_mtime > 0
        assert atomic.cleanup_stale(tmp_path) == []
        os.write(tmp.fd, b"done")
    assert (tmp_path / "x.pth").read_bytes() == b"done"
    assert not [t for t in temps.temp_files(tmp_path)]


def test_downloads_keep_a_heartbeat(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beating: list[Path] = []
    real = temps.Heartbeat.__init__

    def spy(self: temps.Heartbeat, path: Path, fd: int) -> None:
        beating.append(path)
        real(self, path, fd)

    monkeypatch.setattr(temps.Heartbeat, "__init__", spy)
    cache.download_url(f"{server.url}/{blob.name}", progress=False, options=OPTS)
    assert [p.parent for p in beating] == [isolated_cache]
    assert beating[0].name.startswith(f".{blob.name}~") and "~hb" in beating[0].name


def test_a_full_disk_says_what_is_needed_and_what_takes_the_space(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = _leftover(isolated_cache, blob.name, age_s=120, size=2 << 20)
    killed = _leftover(isolated_cache, "old.pth", age_s=3 * 3600, size=1 << 20, beat=False)
    (isolated_cache / "other.pth").write_bytes(b"x")
    free = 1000
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(_transfer.shutil, "disk_usage", lambda p: usage(10**12, 10**12, free))
    with pytest.raises(DownloadError) as info:
        cache.download_url(f"{server.url}/{blob.name}", progress=False, options=OPTS)
    text = str(info.value)
    assert f"No space left in {str(isolated_cache)!r} for {blob.name}" in text
    assert f"it needs {SIZE:,} bytes, {free:,} bytes are free" in text
    assert "cache is unchanged" not in text and "cached files are as they were" in text
    assert f"{running.name}  2,097,152 bytes, written by {OTHER} (pid 4242)" in text
    assert "last touched 2 min ago: a download still running, or killed less than 10 min" in text
    assert f"{killed.name}  1,048,576 bytes" in text and "without heartbeat" in text
    assert f"Free at least {SIZE - free:,} bytes" in text and "WSL_IMAGES_CACHE" in text
    names = sorted(p.name for p in isolated_cache.iterdir())
    assert names == sorted([".wsl-images", "other.pth", running.name, killed.name])


def test_a_full_disk_midway_names_the_files_size(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No preallocation here (some network file systems): the disk fills during the download.
    monkeypatch.setattr(_transfer.os, "posix_fallocate", None, raising=False)
    real = _fileio.PositionalFile.write_at

    def write_at(self: _fileio.PositionalFile, data: memoryview, offset: int) -> None:
        if offset >= SIZE // 2:
            raise OSError(28, "No space left on device")
        real(self, data, offset)

    monkeypatch.setattr(_fileio.PositionalFile, "write_at", write_at)
    with pytest.raises(
        DownloadError, match=rf"for {blob.name}: it needs {SIZE:,} bytes, .* are free"
    ):
        cache.download_url(f"{server.url}/{blob.name}", progress=False, options=OPTS)
    assert temps.temp_files(isolated_cache) == []


def test_a_temp_file_removed_under_a_running_download_is_explained(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another host judged it abandoned (this process was suspended past the heartbeat window).
    real = _fileio.PositionalFile.write_at

    def write_at(self: _fileio.PositionalFile, data: memoryview, offset: int) -> None:
        self.path.unlink(missing_ok=True)
        real(self, data, offset)

    monkeypatch.setattr(_fileio.PositionalFile, "write_at", write_at)
    with pytest.raises(DownloadError, match="was removed while it was being written"):
        cache.download_url(f"{server.url}/{blob.name}", progress=False, options=OPTS)
    assert not (isolated_cache / blob.name).exists()
