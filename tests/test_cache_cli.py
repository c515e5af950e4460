"""``wsl-images download`` and ``cache list | verify | clear`` on a real cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from server import FileServer

from wsl_images import get_model
from wsl_images.cache import _records
from wsl_images.cache._paths import derived_path
from wsl_images.cli import main

Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture
def cached(served: Served, register_file: Callable[[str, str], None], isolated_cache: Path) -> Path:
    """resnet18_ssl registered at the served legacy file, loaded once (so its layout kept)."""
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")
    get_model("resnet18_ssl", progress=False)
    path = isolated_cache / files["legacy"].name
    assert derived_path(path).is_file()
    return path


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_list_shows_files_and_derived_files(
    cached: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cached.parent / "someone-elses.pth").write_bytes(b"torch.hub's file")
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{cached.name} (resnet18_ssl)  {cached.stat().st_size:,} bytes  verified" in out
    assert f"+ {derived_path(cached).name}" in out and "layout of its tensors, verified" in out
    assert "someone-elses.pth" not in out  # files of other tools are not ours to list
    assert main(["cache", "list", "ssl_resnet18"]) == 0  # timm's legacy name for it
    assert f"{cached.name} (resnet18_ssl)" in capsys.readouterr().out


def test_verify_rehashes_and_fails_on_a_bad_source(
    cached: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "verify"]) == 0
    assert "2 file(s) hashed in full: all ok" in capsys.readouterr().out
    _flip_last_byte(cached)
    assert main(["cache", "verify", "resnet18_ssl"]) == 1
    out = capsys.readouterr().out
    assert f"BAD {cached}: sha256" in out and f"wsl-images cache clear {cached.name}" in out
    assert _records.read(cached) is None  # the next load hashes it (and fetches it again)


def test_a_flipped_byte_in_the_layout_is_caught_and_never_used(
    cached: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = derived_path(cached)
    good = layout.read_bytes()
    _flip_last_byte(layout)
    assert main(["cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"BAD {layout}: its sha256" in out and "the next load makes it again" in out
    assert not layout.exists()
    # Flipped again, between loads this time: the next load hashes the layout (always: it is
    # small), refuses it, parses the verified source instead and keeps its layout again, offline.
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    reference = get_model("resnet18_ssl", progress=False).state_dict()
    assert layout.read_bytes() == good
    data = bytearray(good)
    at = data.index(b'"layer1.0.conv1.weight": ["float32", ') + 38  # its offset in the file
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    layout.write_bytes(bytes(data))
    model = get_model("resnet18_ssl", progress=False)
    for key, value in reference.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert layout.read_bytes() == good


def test_clear_removes_file_record_and_layout(
    cached: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = cached.parent / "someone-elses.pth"
    other.write_bytes(b"torch.hub's file")
    assert main(["cache", "clear", "resnet18_ssl"]) == 0
    assert f"removed {cached}" in capsys.readouterr().out
    assert not cached.exists() and not derived_path(cached).exists()
    assert _records.read(cached) is None
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
    assert list((cached.parent / ".wsl-images" / "derived").iterdir()) == []


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
