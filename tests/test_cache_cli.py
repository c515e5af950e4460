"""``wsl-images download`` and ``cache list | verify | clear`` on a real cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from server import FileServer

from wsl_images import _records, get_model
from wsl_images.cli import main
from wsl_images.loading import converted_path

Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture
def cached(served: Served, register_file: Callable[[str, str], None], isolated_cache: Path) -> Path:
    """resnet18_ssl registered at the served legacy file, loaded once (so converted too)."""
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")
    get_model("resnet18_ssl", progress=False)
    path = isolated_cache / files["legacy"].name
    assert converted_path(path).is_file()
    return path


def test_list_shows_files_and_converted_copies(
    cached: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cached.parent / "someone-elses.pth").write_bytes(b"torch.hub's file")
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{cached.name}  {cached.stat().st_size:,} bytes  verified" in out
    assert f"+ {converted_path(cached).name}" in out
    assert "someone-elses.pth" not in out  # files of other tools are not ours to list


def test_verify_rehashes_and_fails_on_a_bad_file(
    cached: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "verify"]) == 0
    assert f"{cached.name}  ok  sha256 {_records.sha256_of(cached)}" in capsys.readouterr().out
    data = bytearray(cached.read_bytes())
    data[-1] ^= 1
    cached.write_bytes(bytes(data))
    assert main(["cache", "verify", "resnet18_ssl"]) == 1
    out = capsys.readouterr().out
    assert f"{cached.name}  BAD: sha256" in out and "wsl-images cache clear NAME" in out
    assert _records.recorded_sha256(cached) is None  # the next load hashes it (and refetches)


def test_clear_removes_file_record_and_converted_copy(
    cached: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = cached.parent / "someone-elses.pth"
    other.write_bytes(b"torch.hub's file")
    assert main(["cache", "clear", "resnet18_ssl"]) == 0
    assert f"removed {cached.name}" in capsys.readouterr().out
    assert not cached.exists() and not converted_path(cached).exists()
    assert not _records.record_path(cached).exists()
    assert other.exists()


def test_clear_everything_keeps_other_tools_files(
    cached: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = cached.parent / "someone-elses.pth"
    other.write_bytes(b"torch.hub's file")
    assert main(["cache", "clear"]) == 0
    assert sorted(p.name for p in cached.parent.iterdir() if not p.name.startswith(".")) == [
        other.name
    ]


def test_download_by_url_and_bad_usage(
    served: Served, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, files = served
    url = f"{server.url}/{files['zip'].name}"
    assert main(["download", "--no-progress", url]) == 0
    assert capsys.readouterr().out.strip() == str(isolated_cache / files["zip"].name)
    assert main(["download", "--all", "resnet18_ssl"]) == 2
    assert "give model NAMEs (or URLs) or --all" in capsys.readouterr().err
    assert main(["cache", "verify", "resnet50_wsl"]) == 2
    assert "Unknown model 'resnet50_wsl'" in capsys.readouterr().err
