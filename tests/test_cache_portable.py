"""The download cache where the platform or the libraries lack what the fast path uses.

Each scenario runs on this machine as it is ("native") and once per simulated environment:

- ``urllib3-1``: urllib3 1.x, which ``requests>=2.28`` allows, has no ``HTTPResponse.read1``
  (hidden here on urllib3 2's response class);
- ``no-positional-io``: Windows' Python has no ``os.pread``, ``os.pwrite`` or ``os.preadv``
  (removed here from ``os``).

Every outcome must be the same: the served bytes in the cache, the same sha256 in the record,
nothing left behind, the same requests on the wire where the scenario pins them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from faultserver import Faults, FaultServer

import wsl_images
from wsl_images import cache
from wsl_images._util import _atomic as atomic
from wsl_images.cache import TransferOptions, _records
from wsl_images.errors import DownloadError

PART = 256 << 10
OPTS = TransferOptions(
    connect_timeout=2,
    read_timeout=2,
    retries=3,
    backoff=0.01,
    backoff_max=0.05,
    stall_timeout=5,
    min_rate=200_000,
    parts=4,
    part_size=PART,
    min_piece=PART // 4,
    ramp_s=30,  # one connection unless a scenario opens all at once
    fast_rate=1,
)
PARALLEL = dataclasses.replace(OPTS, ramp_s=0)
SIZE = 5 * PART + 1234
PLATFORMS = ["native", "urllib3-1", "no-positional-io"]


def _no_read1(self: object) -> None:
    raise AttributeError("'HTTPResponse' object has no attribute 'read1' (urllib3 1.x)")


@pytest.fixture(params=PLATFORMS)
def platform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "urllib3-1":
        # raising=False: under urllib3 1.x itself there is no read1 to hide.
        monkeypatch.setattr(urllib3.response.HTTPResponse, "read1", property(_no_read1), False)
    elif request.param == "no-positional-io":
        for call in ("pread", "pwrite", "preadv"):
            monkeypatch.delattr(os, call, raising=False)
    return str(request.param)


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


def _get(server: FaultServer, blob: Path, opts: TransferOptions = OPTS) -> Path:
    return cache.download_url(f"{server.url}/{blob.name}", progress=False, options=opts)


def _assert_same(folder: Path, blob: Path) -> None:
    """The served bytes, the sha256 recorded for them, and no temp file left."""
    assert [p for p in folder.rglob("*") if atomic.is_temp_name(p.name)] == []
    data = (folder / blob.name).read_bytes()
    assert data == blob.read_bytes()
    record = _records.read(folder / blob.name)
    assert record is not None and record.sha256 == hashlib.sha256(data).hexdigest()


def test_a_whole_file_on_one_connection(
    platform: str, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    assert _get(server, blob) == isolated_cache / blob.name
    _assert_same(isolated_cache, blob)
    assert server.ranges == ["bytes=0-"] and server.bytes_sent[blob.name] == SIZE


def test_parallel_pieces(
    platform: str, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(rate=5e6)
    _get(server, blob, PARALLEL)
    _assert_same(isolated_cache, blob)
    assert len(server.by_client) >= PARALLEL.parts


def test_an_interrupted_download_resumes(
    platform: str, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(drop_at=SIZE // 2)
    _get(server, blob)
    _assert_same(isolated_cache, blob)
    assert server.ranges == ["bytes=0-", f"bytes={SIZE // 2}-"]
    assert server.bytes_sent[blob.name] == SIZE


def test_dropped_parallel_pieces_are_refetched(
    platform: str, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(drop_at=SIZE // 2, drop_times=3, rate=20e6)
    _get(server, blob, PARALLEL)
    _assert_same(isolated_cache, blob)


def test_a_trickle_is_caught_by_the_stall_watchdog(
    platform: str, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    # Needs reads that return what arrived: a read waiting for 1 MiB would never return.
    server.faults[blob.name] = Faults(trickle_at=SIZE // 2, trickle_every=0.05)
    _get(server, blob, dataclasses.replace(OPTS, stall_timeout=0.3))
    _assert_same(isolated_cache, blob)
    assert server.requests[blob.name] == 2


def test_a_cut_chunked_body_resumes_and_ends(
    platform: str, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    # http.client raises IncompleteRead for the missing last chunk: retried like any drop.
    server.faults[blob.name] = Faults(ignore_range_first=1, chunked_cut=True)
    _get(server, blob)
    _assert_same(isolated_cache, blob)
    assert server.ranges[1] == f"bytes={SIZE}-"


def test_a_short_body_is_a_download_error(
    platform: str, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    server.faults[blob.name] = Faults(ignore_range=True, length_delta=100)
    with pytest.raises(DownloadError, match=rf"body shorter than announced: {SIZE} of"):
        _get(server, blob)
    assert not (isolated_cache / blob.name).exists()


def test_verify_hashes_the_same(
    platform: str, server: FaultServer, blob: Path, isolated_cache: Path
) -> None:
    _get(server, blob, PARALLEL)
    assert wsl_images.verify_cache() == []
    _assert_same(isolated_cache, blob)


def test_the_simulations_hold(platform: str, server: FaultServer, blob: Path) -> None:
    """What each simulated environment lacks is really missing while its scenarios run."""
    with urllib3.PoolManager() as pool:
        resp = pool.request("GET", f"{server.url}/{blob.name}", preload_content=False)
        urllib3_2 = int(urllib3.__version__.split(".")[0]) >= 2
        assert hasattr(resp, "read1") == (platform != "urllib3-1" and urllib3_2)
        assert isinstance(resp._fp, http.client.HTTPResponse)
        resp.release_conn()
    lacking = [c for c in ("pread", "pwrite", "preadv") if not hasattr(os, c)]
    assert lacking == (["pread", "pwrite", "preadv"] if platform == "no-positional-io" else [])
