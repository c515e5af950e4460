"""The download cache against a fault-injecting loopback server: every outcome asserted."""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultserver import Faults, FaultServer
from platforms import needs_symlinks

import wsl_images
from wsl_images import cache
from wsl_images._util import _atomic as atomic
from wsl_images._util import _temps as temps
from wsl_images.cache import TransferOptions, _fileio, _hasher, _http, _records, _transfer
from wsl_images.errors import (
    DownloadError,
    FileInUseError,
    HashMismatchError,
    InvalidInputError,
    OfflineError,
    UnreachableError,
)

PART = 256 << 10
# One connection (its first window is judged after 30 s; these downloads end long before):
# request and byte counts are exact.
OPTS = TransferOptions(
    connect_timeout=2,
    read_timeout=2,
    retries=3,
    backoff=0.01,
    backoff_max=0.05,
    stall_timeout=5,  # long: on a loaded CI machine a short window reconnects a slow, healthy
    min_rate=200_000,  # connection, which adds a request to the exact counts below
    parts=4,
    part_size=PART,
    min_piece=PART // 4,
    ramp_s=30,
    fast_rate=1,
)
# Every connection from the start: the fault scenarios exercise parallel pieces too.
PARALLEL = dataclasses.replace(OPTS, ramp_s=0)
SIZE = 5 * PART + 1234


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("blob") / f"blob-{hashlib.sha256(data).hexdigest()[:8]}.bin"
    path.write_bytes(data)
    return path


@pytest.fixture
def server(blob: Path) -> Iterator[FaultServer]:
    with FaultServer({blob.name: blob, "nohash.bin": blob}) as srv:
        yield srv


def _get(server: FaultServer, name: str, **kwargs: object) -> Path:
    kwargs.setdefault("options", OPTS)
    return cache.download_url(f"{server.url}/{name}", progress=False, **kwargs)  # type: ignore[arg-type]


def _assert_clean(folder: Path, blob: Path | None = None) -> None:
    """No temp file left; the cached file (if expected) is byte-identical to the served one."""
    assert [p for p in folder.rglob("*") if atomic.is_temp_name(p.name)] == []
    if blob is not None:
        assert (folder / blob.name).read_bytes() == blob.read_bytes()


def test_parallel_connections_deliver_the_file(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.faults[blob.name] = Faults(rate=5e6)  # slow enough that the first cannot do it all
    assert _get(server, blob.name, options=PARALLEL) == isolated_cache / blob.name
    _assert_clean(isolated_cache, blob)
    assert len(server.by_client) >= PARALLEL.parts  # every connection served bytes
    # The first response runs to the end of the file and is cut when helpers take the rest:
    # what the server had already sent then is the only waste.
    assert SIZE <= server.bytes_sent[blob.name] <= 2 * SIZE
    # A verified file costs a stat from then on: no request, no hashing.
    monkeypatch.setattr(_records, "sha256_of", lambda p: pytest.fail("re-hashed"))
    requests = server.requests[blob.name]
    assert _get(server, blob.name, options=PARALLEL) == isolated_cache / blob.name
    assert server.requests[blob.name] == requests


def test_a_fast_first_connection_fetches_the_file_alone(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    _get(server, blob.name)
    _assert_clean(isolated_cache, blob)
    assert server.ranges == ["bytes=0-"]  # one request for the whole file...
    assert len(server.clients) == 1 and server.bytes_sent[blob.name] == SIZE  # ...once


def test_a_slow_first_connection_gets_parallel_helpers(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(rate=2e6)  # each response capped at 2 MB/s
    opts = dataclasses.replace(OPTS, ramp_s=0.05, fast_rate=1e12)
    cache.download_url(f"{server.url}/{blob.name}", progress=False, options=opts)
    _assert_clean(isolated_cache, blob)
    assert len(server.by_client) >= opts.parts


def test_a_capped_64mb_file_keeps_every_connection_busy(
    tmp_path: Path, isolated_cache: Path
) -> None:
    # 64 MB at 25 MB/s per connection (a CDN over a long path): 8 connections should share it.
    # Pieces are sized from the file (2 MiB here), so no connection idles while others work.
    data = bytes(range(256)) * (1 << 18)
    path = tmp_path / f"big-{hashlib.sha256(data).hexdigest()[:8]}.bin"
    path.write_bytes(data)
    opts = dataclasses.replace(OPTS, parts=8, part_size=16 << 20, min_piece=512 << 10)
    opts = dataclasses.replace(opts, ramp_s=0.1, fast_rate=200e6)
    with FaultServer({path.name: path}) as srv:
        srv.faults[path.name] = Faults(rate=25e6)
        cache.download_url(f"{srv.url}/{path.name}", progress=False, options=opts)
        served = sorted(srv.by_client.values())
    assert (isolated_cache / path.name).read_bytes() == data
    assert len(served) >= 8  # eight connections (one more if the first was cut and reopened)
    assert served[-8] >= 2 << 20  # each of the eight busiest fetched at least a piece
    assert sum(served) <= 1.1 * len(data)  # cuts wasted little


def test_dropped_connection_resumes_keeping_received_bytes(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(drop_at=SIZE // 2)
    _get(server, blob.name)
    _assert_clean(isolated_cache, blob)
    assert server.ranges == ["bytes=0-", f"bytes={SIZE // 2}-"]
    assert server.bytes_sent[blob.name] == SIZE


def test_dropped_parallel_piece_is_refetched(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(drop_at=SIZE // 2, drop_times=3)
    _get(server, blob.name, options=PARALLEL)
    _assert_clean(isolated_cache, blob)


def test_server_ignoring_range_restarts_cleanly(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(ignore_range=True, drop_at=SIZE // 2)
    _get(server, blob.name)
    _assert_clean(isolated_cache, blob)
    assert server.requests[blob.name] == 2
    assert server.bytes_sent[blob.name] == SIZE // 2 + SIZE
    assert server.ranges[1] == f"bytes={SIZE // 2}-"  # asked to resume, got the whole file


def test_single_stream_resumes_with_range(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    # The first answer ignores Range (one stream); the resume after the drop is honoured.
    server.faults[blob.name] = Faults(ignore_range_first=1, drop_at=SIZE // 2)
    _get(server, blob.name)
    _assert_clean(isolated_cache, blob)
    assert server.ranges[1] == f"bytes={SIZE // 2}-"
    assert server.bytes_sent[blob.name] == SIZE
    assert server.requests[blob.name] == 2


def test_416_after_every_byte_arrived_means_done(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    # A chunked answer cut just before its end: all bytes are here, the resume gets 416.
    server.faults[blob.name] = Faults(ignore_range_first=1, chunked_cut=True)
    _get(server, blob.name)
    _assert_clean(isolated_cache, blob)
    assert server.ranges[1] == f"bytes={SIZE}-"
    assert server.requests[blob.name] == 2 and server.bytes_sent[blob.name] == SIZE


def test_silent_server_hits_the_read_timeout_and_resumes(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(trickle_at=SIZE // 2, trickle_every=1.0)
    opts = dataclasses.replace(OPTS, read_timeout=0.3, stall_timeout=60)
    cache.download_url(f"{server.url}/{blob.name}", progress=False, options=opts)
    _assert_clean(isolated_cache, blob)
    assert server.requests[blob.name] == 2
    assert server.ranges[1] in (f"bytes={SIZE // 2}-", f"bytes={SIZE // 2 + 1}-")  # +1 trickled


def _count_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = _transfer.open_get

    def counted(session: object, url: str, *args: object) -> object:
        seen.append(url)
        return real(session, url, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_transfer, "open_get", counted)
    return seen


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("refused", "the connection was refused"),
        ("wsl-images.invalid", "its name does not resolve"),
    ],
)
def test_an_unreachable_host_fails_fast_after_one_quick_retry(
    host: str,
    why: str,
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if host == "refused":
        with FaultServer({}) as gone:  # a port where nothing listens any more
            host = gone.url.removeprefix("http://")
    attempts = _count_attempts(monkeypatch)
    url = f"http://{host}/blob-12345678.bin"
    patient = dataclasses.replace(OPTS, retries=5, backoff=30.0, backoff_max=60.0)
    with caplog.at_level(logging.INFO), pytest.raises(UnreachableError) as info:
        cache.download_url(url, progress=False, options=patient, label="resnet18_ssl")
    text = str(info.value)
    assert f"Cannot reach {host.split(':')[0]}: {why}" in text
    assert "blob-12345678.bin could not be downloaded" in text
    for hint in ("`wsl-images download resnet18_ssl`", "WSL_IMAGES_MIRROR", "WSL_IMAGES_OFFLINE=1"):
        assert hint in text
    # Two attempts, 0.5 s apart, instead of five retries with 30 s backoff: the error comes
    # within a second of the first attempt (facts, not a timing).
    assert attempts == [url, url]
    assert "retrying in 0.5 s" in caplog.text and caplog.text.count("retrying in") == 1
    _assert_clean(isolated_cache)


def test_a_file_torch_hub_fetched_is_reused_after_verification(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    isolated_cache.mkdir()
    (isolated_cache / blob.name).write_bytes(blob.read_bytes())  # as torch.hub left it
    assert _get(server, blob.name) == isolated_cache / blob.name
    assert sum(server.requests.values()) == 0
    record = _records.read(isolated_cache / blob.name)
    assert record is not None and record.sha256 == hashlib.sha256(blob.read_bytes()).hexdigest()


def test_a_verified_file_is_rehashed_only_after_a_change(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _get(server, blob.name)
    hashed: list[Path] = []
    real = _records.sha256_of
    monkeypatch.setattr(_records, "sha256_of", lambda p: hashed.append(p) or real(p))
    _get(server, blob.name)
    assert hashed == []
    os.utime(path, ns=(1, 1))  # same bytes, new mtime: the record no longer vouches for it
    _get(server, blob.name)
    _get(server, blob.name)
    assert hashed == [path]
    assert server.requests[blob.name] == 1


def test_retry_after_forms() -> None:
    assert _http._retry_after("7") == 7.0
    assert _http._retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (_http._retry_after(future) or 0) <= 30


@pytest.mark.parametrize("status", [503, 429, 408])
def test_transient_statuses_are_retried(
    status: int, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    # Retry-After of an hour: capped by backoff_max, or this test would hang.
    server.faults[blob.name] = Faults(fail_first=2, fail_status=status, retry_after="3600")
    _get(server, blob.name)
    _assert_clean(isolated_cache, blob)
    assert server.requests[blob.name] == 1 + 2
    assert server.bytes_sent[blob.name] == SIZE


def test_persistent_503_gives_up_with_a_clear_message(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(fail_first=100)
    with pytest.raises(DownloadError, match=r"failed after 3 retries: HTTP 503.*WSL_IMAGES_MIRROR"):
        _get(server, blob.name)
    assert server.requests[blob.name] == 4
    assert not (isolated_cache / blob.name).exists()
    _assert_clean(isolated_cache)


def test_other_4xx_fails_at_once(server: FaultServer, blob: Path, isolated_cache: Path) -> None:
    server.faults[blob.name] = Faults(status=403)
    with pytest.raises(DownloadError, match=r"HTTP 403 Forbidden: access was refused"):
        _get(server, blob.name)
    with pytest.raises(DownloadError, match=r"HTTP 404 .*no file at this URL"):
        _get(server, "missing-12345678.bin")
    assert server.requests[blob.name] == 1 and server.requests["missing-12345678.bin"] == 1
    _assert_clean(isolated_cache)


def test_flipped_byte_deletes_the_download(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(flip_at=SIZE - 10)
    url = f"{server.url}/{blob.name}"
    prefix = blob.name[5:13]
    with pytest.raises(HashMismatchError) as info:
        _get(server, blob.name)
    text = str(info.value)
    assert url in text and f"expected {prefix}..." in text and "deleted" in text
    actual = text.split("but got ")[1][:64]
    assert actual == hashlib.sha256(_flipped(blob, SIZE - 10)).hexdigest()
    assert not (isolated_cache / blob.name).exists()
    _assert_clean(isolated_cache)


def _flipped(blob: Path, at: int) -> bytes:
    data = bytearray(blob.read_bytes())
    data[at] ^= 0xFF
    return bytes(data)


def test_body_shorter_than_announced_is_caught(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(ignore_range=True, length_delta=100)
    with pytest.raises(
        DownloadError, match=rf"body shorter than announced: {SIZE} of {SIZE + 100}"
    ):
        _get(server, blob.name)
    # The server ignores Range, so each retry restarts the file: 3 restarts, then the end.
    assert server.requests[blob.name] == 1 + 3 + 1
    assert not (isolated_cache / blob.name).exists()
    _assert_clean(isolated_cache)


def test_body_longer_than_announced_fails_the_hash(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(ignore_range=True, length_delta=-100)
    with pytest.raises(HashMismatchError, match="does not match its name"):
        _get(server, blob.name)
    _assert_clean(isolated_cache)


def test_mismatched_content_range_is_retried(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(length_delta=7)  # 206 whose length contradicts its range
    with pytest.raises(DownloadError, match=r"answered Content-Range bytes 0-\d+/\d+, length"):
        _get(server, blob.name)
    _assert_clean(isolated_cache)


def test_stall_watchdog_reconnects_a_trickling_connection(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(trickle_at=SIZE // 2, trickle_every=0.05)
    _get(server, blob.name, options=dataclasses.replace(OPTS, stall_timeout=0.3))
    _assert_clean(isolated_cache, blob)
    assert server.requests[blob.name] == 2  # the trickling stream was resumed on a new connection
    assert server.bytes_sent[blob.name] < SIZE + 100


def test_no_hash_in_name_is_reported_unverified(
    server: FaultServer, isolated_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        path = _get(server, "nohash.bin")
    assert path.stat().st_size == SIZE
    assert "nohash.bin has no sha256 prefix in its name: downloaded unverified" in caplog.text


def test_corrupted_cached_file_is_downloaded_again(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    _get(server, blob.name)
    cached = isolated_cache / blob.name
    cached.write_bytes(_flipped(blob, 0))  # a changed file: its record no longer holds
    _get(server, blob.name)
    _assert_clean(isolated_cache, blob)
    assert server.bytes_sent[blob.name] == 2 * SIZE


def test_offline_never_connects(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    with pytest.raises(
        OfflineError, match=rf"{blob.name} is not in the cache.*`wsl-images download"
    ):
        _get(server, blob.name)
    with pytest.raises(OfflineError, match=r"`wsl-images download resnet18_ssl`"):
        wsl_images.download("resnet18_ssl", progress=False)
    assert sum(server.requests.values()) == 0
    monkeypatch.delenv("WSL_IMAGES_OFFLINE")
    _get(server, blob.name)
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    assert _get(server, blob.name).read_bytes() == blob.read_bytes()  # verified file loads
    (isolated_cache / blob.name).write_bytes(_flipped(blob, 5))
    with pytest.raises(HashMismatchError, match=r"is corrupted: its sha256 is [0-9a-f]{64}"):
        _get(server, blob.name)
    assert (isolated_cache / blob.name).exists()  # reported, not silently deleted offline
    assert server.requests[blob.name] == 1


@needs_symlinks
def test_planted_symlink_is_replaced_not_written_through(
    server: FaultServer, blob: Path, isolated_cache: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    isolated_cache.mkdir()
    (isolated_cache / blob.name).symlink_to(outside)
    # Our bookkeeping folder and a lock file planted as links too (filelock truncates).
    (isolated_cache / ".wsl-images").symlink_to(tmp_path, target_is_directory=True)
    _get(server, blob.name)
    assert outside.read_text() == "keep me"
    assert not (isolated_cache / blob.name).is_symlink()
    assert not (isolated_cache / ".wsl-images").is_symlink()
    _assert_clean(isolated_cache, blob)
    cache.remove_source(isolated_cache / blob.name)
    lock = isolated_cache / ".wsl-images" / f"{blob.name}.lock"
    lock.unlink()
    lock.symlink_to(outside)
    _get(server, blob.name)
    assert outside.read_text() == "keep me"
    _assert_clean(isolated_cache, blob)


def test_unwritable_cache_folder_is_a_clear_error(
    server: FaultServer, blob: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DownloadError, match=r"Cannot create the cache folder .*WSL_IMAGES_CACHE"):
        _get(server, blob.name, cache_dir=blocker / "cache")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x-12345678.pth",
        "file:///etc/passwd",
        "http://127.0.0.1/a/..%2F..%2Fescape.pth",
        "http://127.0.0.1/a/..",
        "http://127.0.0.1/dir/",
    ],
)
def test_urls_that_cannot_name_a_cache_file_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError, match="URL"):
        cache.download_url(url, progress=False)


def test_stale_temp_files_of_dead_processes_are_removed(
    server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    isolated_cache.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = temps.host_id()
        stale = isolated_cache / f".{blob.name}~{host}~{int(dead.stdout)}~ab12.part"
        live = isolated_cache / f".{blob.name}~{host}~{alive.pid}~cd34.part"
        for path in (stale, live):
            path.write_bytes(b"partial")
        _get(server, blob.name)
        assert not stale.exists() and live.exists()
    finally:
        alive.kill()
        alive.wait()


def test_disk_full_leaves_the_cache_as_it_was(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated_cache.mkdir()
    (isolated_cache / "other.pth").write_bytes(b"x")

    def full(self: object, data: memoryview, offset: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fileio.PositionalFile, "write_at", full)
    with pytest.raises(DownloadError, match=r"No space left in .*partial download was removed"):
        _get(server, blob.name)
    assert sorted(p.name for p in isolated_cache.iterdir()) == [".wsl-images", "other.pth"]


def test_free_space_is_checked_before_downloading(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        _transfer.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 0, 10)
    )
    with pytest.raises(DownloadError, match=rf"No space left .*{SIZE} bytes needed, 10 free"):
        _get(server, blob.name)
    assert server.requests[blob.name] == 1  # the first response was closed unread
    assert not (isolated_cache / blob.name).exists()
    _assert_clean(isolated_cache)


def test_one_progress_bar_right_after_resume(
    server: FaultServer,
    blob: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.faults[blob.name] = Faults(drop_at=SIZE // 3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    cache.download_url(f"{server.url}/{blob.name}", progress=True, options=PARALLEL)
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith(blob.name) and "100%" in final and "1.25M/1.25M" in final


def test_progress_is_silent_without_a_terminal(
    server: FaultServer, blob: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache.download_url(f"{server.url}/{blob.name}", progress=True, options=OPTS)
    assert capsys.readouterr().err == ""


def test_transfer_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"TIMEOUT": "3", "RETRIES": "2", "BACKOFF": "0.5", "STALL": "9"}.items():
        monkeypatch.setenv(f"WSL_IMAGES_{key}", value)
    monkeypatch.setenv("WSL_IMAGES_PARTS", "1")
    monkeypatch.setenv("WSL_IMAGES_PART_SIZE", "0.5")
    opts = TransferOptions.from_env()
    assert (opts.connect_timeout, opts.read_timeout, opts.retries) == (3.0, 3.0, 2)
    assert (opts.backoff, opts.stall_timeout, opts.parts, opts.part_size) == (0.5, 9.0, 1, 1 << 19)
    monkeypatch.setenv("WSL_IMAGES_RETRIES", "0")  # no retries at all is a valid choice
    monkeypatch.setenv("WSL_IMAGES_BACKOFF", "0")
    assert (TransferOptions.from_env().retries, TransferOptions.from_env().backoff) == (0, 0.0)


@pytest.mark.parametrize(
    ("variable", "value", "takes"),
    [
        ("WSL_IMAGES_PARTS", "abc", "a whole number of connections, 1 or more"),
        ("WSL_IMAGES_PARTS", "0", "a whole number of connections, 1 or more"),
        ("WSL_IMAGES_PARTS", "2.5", "a whole number of connections, 1 or more"),
        ("WSL_IMAGES_RETRIES", "x", "a whole number, 0 or more"),
        ("WSL_IMAGES_RETRIES", "-1", "a whole number, 0 or more"),
        ("WSL_IMAGES_TIMEOUT", "-1", "a number of seconds above 0"),
        ("WSL_IMAGES_TIMEOUT", "0", "a number of seconds above 0"),
        ("WSL_IMAGES_TIMEOUT", "nan", "a number of seconds above 0"),
        ("WSL_IMAGES_BACKOFF", "soon", "a number of seconds, 0 or more"),
        ("WSL_IMAGES_STALL", "-5", "a number of seconds above 0"),
        ("WSL_IMAGES_PART_SIZE", "16M", "a size in MiB above 0"),
        ("WSL_IMAGES_PART_SIZE", "inf", "a size in MiB above 0"),
    ],
)
def test_a_bad_knob_names_the_variable_its_value_and_what_it_takes(
    variable: str,
    value: str,
    takes: str,
    server: FaultServer,
    blob: Path,
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value)
    expected = rf"{variable}='{re.escape(value)}' is not valid: it takes {re.escape(takes)}"
    with pytest.raises(InvalidInputError, match=expected):
        TransferOptions.from_env()
    # The same error from a download, before anything is fetched or written.
    with pytest.raises(InvalidInputError, match=expected):
        cache.download_url(f"{server.url}/{blob.name}", progress=False)
    assert sum(server.requests.values()) == 0 and not isolated_cache.exists()


@pytest.mark.parametrize("variable", ["WSL_IMAGES_OFFLINE", "WSL_IMAGES_NO_LOCK"])
def test_a_switch_takes_on_or_off_and_nothing_else(
    variable: str, server: FaultServer, blob: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "ture")  # a typo must not quietly mean "off"
    with pytest.raises(InvalidInputError, match=rf"{variable}='ture' is not valid: it takes 1"):
        _get(server, blob.name)
    assert sum(server.requests.values()) == 0
    for off in ("0", "off", "No", ""):
        monkeypatch.setenv(variable, off)
        _get(server, blob.name)
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "On")
    with pytest.raises(OfflineError):
        _get(server, "nohash.bin")


def test_a_mirror_that_is_not_a_url_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSL_IMAGES_MIRROR", "mirror.example/models")
    with pytest.raises(InvalidInputError, match=r"WSL_IMAGES_MIRROR='mirror.example/models'.*http"):
        wsl_images.download("resnet18_ssl", progress=False)


def test_a_failed_download_leaves_no_write_back_thread_behind(
    server: FaultServer, blob: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Write-back every 64 KiB, each taking a while: one is running when the download fails.
    monkeypatch.setattr(_hasher, "_SYNC_EVERY", 64 << 10)
    monkeypatch.setattr(_hasher, "_WAKE", 64 << 10)
    synced: list[tuple[int, bool]] = []
    threads: list[threading.Thread] = []

    def slow_sync(fd: int) -> None:
        threads.append(threading.current_thread())
        time.sleep(0.5)
        try:
            still_open = os.fstat(fd).st_size >= 0
        except OSError:
            still_open = False
        synced.append((fd, still_open))

    monkeypatch.setattr(_hasher.os, "fdatasync", slow_sync)
    server.faults[blob.name] = Faults(drop_at=SIZE // 2, drop_times=100)
    with pytest.raises(DownloadError, match="failed after 1 retries"):
        _get(server, blob.name, options=dataclasses.replace(OPTS, retries=1))
    assert threads and not any(t.is_alive() for t in threads)  # joined before fd was closed
    assert synced and all(still_open for _, still_open in synced)
    _assert_clean(isolated_cache)


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Every requests.Session made, and every one closed (by id)."""
    import requests

    seen: dict[str, list[int]] = {"made": [], "closed": []}
    init, close = requests.Session.__init__, requests.Session.close

    def spy_init(self: requests.Session) -> None:
        seen["made"].append(id(self))
        init(self)

    def spy_close(self: requests.Session) -> None:
        seen["closed"].append(id(self))
        close(self)

    monkeypatch.setattr(requests.Session, "__init__", spy_init)
    monkeypatch.setattr(requests.Session, "close", spy_close)
    return seen


def test_every_session_is_closed_after_success_and_failure(
    sessions: dict[str, list[int]], server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(rate=5e6)
    _get(server, blob.name, options=PARALLEL)
    assert len(sessions["made"]) == PARALLEL.parts  # the first connection and three helpers
    assert sorted(sessions["closed"]) == sorted(sessions["made"])
    wsl_images.clear_cache()
    server.faults[blob.name] = Faults(drop_at=SIZE // 2, drop_times=100, rate=5e6)
    with pytest.raises(DownloadError, match="failed after"):
        _get(server, blob.name, options=PARALLEL)
    with pytest.raises(DownloadError, match="HTTP 404"):
        _get(server, "missing-12345678.bin")
    assert len(sessions["made"]) > PARALLEL.parts + 1
    assert sorted(sessions["closed"]) == sorted(sessions["made"])
    _assert_clean(isolated_cache)


def test_a_cached_file_held_by_another_process_is_named_not_half_replaced(
    server: FaultServer,
    blob: Path,
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Windows: a model loaded from the cached file maps it, so it can be neither removed nor
    # replaced. The file is found bad (changed under its record); the new download cannot take
    # its place: a clear error, and everything as it was.
    _get(server, blob.name)
    cached = isolated_cache / blob.name
    cached.write_bytes(_flipped(blob, 0))
    held = "The process cannot access the file because it is being used by another process"
    real_unlink, real_replace = Path.unlink, os.replace

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self == cached:
            raise PermissionError(13, held, str(self))
        real_unlink(self, missing_ok=missing_ok)

    def replace(src: str, dst: str) -> None:
        if Path(dst) == cached:
            raise PermissionError(13, held, dst)
        real_replace(src, dst)

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(atomic.os, "replace", replace)
    monkeypatch.setattr(atomic, "_REPLACE_WAIT_S", 0.001)
    monkeypatch.setattr(atomic, "_REPLACE_WAIT_MAX_S", 0.001)
    with caplog.at_level(logging.WARNING), pytest.raises(FileInUseError) as info:
        _get(server, blob.name)
    assert f"Cannot replace {str(cached)!r}" in str(info.value)
    assert f"Could not remove {cached}: {held}" in caplog.text
    assert cached.read_bytes() == _flipped(blob, 0)
    _assert_clean(isolated_cache)
