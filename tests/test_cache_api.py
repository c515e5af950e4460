"""The cache's Python API on a real cache folder: scan, verify, clear, cache_dir, the folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from server import FileServer

from wsl_images import (
    BadFile,
    ClearCacheError,
    clear_cache,
    download,
    get_model,
    scan_cache,
    verify_cache,
)
from wsl_images._util import host_id
from wsl_images.cache import _records, file_sha256, get_cache_dir
from wsl_images.cache._paths import derived_path
from wsl_images.models import checkpoint_file

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture
def filled(
    served: Served, register_file: Callable[[str, str], None], isolated_cache: Path
) -> dict[str, Path]:
    """A registered legacy file (loaded: its layout kept) and a zip file downloaded by URL."""
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")
    get_model("resnet18_ssl", progress=False)
    zipped = download(f"{server.url}/{files['zip'].name}", progress=False)
    (isolated_cache / "someone-elses.pth").write_bytes(b"torch.hub's or timm's file")
    return {"legacy": isolated_cache / files["legacy"].name, "zip": zipped}


def _flip(path: Path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def test_scan_lists_what_wsl_images_keeps(filled: dict[str, Path]) -> None:
    entries = {e.path.name: e for e in scan_cache()}
    assert sorted(entries) == sorted(p.name for p in filled.values())  # not others' files
    legacy, zipped = entries[filled["legacy"].name], entries[filled["zip"].name]
    assert legacy.name == "resnet18_ssl" and zipped.name == filled["zip"].name
    assert legacy.verified and zipped.verified and legacy.hash_in_name
    assert legacy.size == filled["legacy"].stat().st_size
    (layout,) = legacy.derived
    assert layout.path == derived_path(filled["legacy"]) and layout.verified
    assert not layout.obsolete and layout.size < 64 << 10  # a layout, not a copy of the weights
    assert legacy.size_on_disk == legacy.size + layout.size
    assert zipped.derived == ()  # a zip-format file is memory-mapped by torch.load as it is


def test_verify_rehashes_everything_and_returns_the_bad_ones(filled: dict[str, Path]) -> None:
    assert verify_cache() == []
    _flip(filled["zip"])
    layout = derived_path(filled["legacy"])
    _flip(layout, at=len(layout.read_bytes()) // 2)
    bad = verify_cache()
    assert [b.path for b in bad] == [layout, filled["zip"]]
    assert all(isinstance(b, BadFile) for b in bad)
    assert "does not match the one written with it" in bad[0].reason
    assert not layout.exists()  # derived: removed, made again from its source on the next load
    assert filled["zip"].exists() and _records.read(filled["zip"]) is None  # source: re-fetched
    assert verify_cache(["resnet18_ssl"]) == []
    assert (
        checkpoint_file("resnet18_ssl", None, progress=False, check_hash=True)[0]
        == filled["legacy"]
    )
    get_model("resnet18_ssl", progress=False)
    assert layout.exists() and verify_cache(["resnet18_ssl"]) == []


def test_clear_by_name_and_everything(filled: dict[str, Path], isolated_cache: Path) -> None:
    layout = derived_path(filled["legacy"])
    removed = clear_cache(["resnet18_ssl"])
    assert removed == [filled["legacy"], layout]
    assert _records.read(filled["legacy"]) is None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    stale = isolated_cache / f".x.pth~{host_id()}~{int(dead.stdout)}~00ff.part"
    stale.write_bytes(b"a killed download")
    assert clear_cache() == [stale, filled["zip"]]
    assert sorted(p.name for p in isolated_cache.iterdir()) == [".wsl-images", "someone-elses.pth"]


def test_obsolete_copies_of_older_versions_are_listed_then_removed(
    served: Served, register_file: Callable[[str, str], None], isolated_cache: Path
) -> None:
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")
    source = download("resnet18_ssl", progress=False)
    derived = isolated_cache / ".wsl-images" / "derived"
    old = [
        source.with_name(source.name + ".safetensors"),  # what wsl-images 0.1 left beside it
        derived / (source.name + ".mmap.pt"),  # 0.2's memory-mappable copy
        derived / (source.name + ".mmap.pt.verified"),  # and its record
    ]
    for path in old:
        path.write_bytes(b"an older version's converted copy")
    (entry,) = scan_cache()
    assert [(d.path, d.obsolete) for d in entry.derived] == [(p, True) for p in old]
    assert entry.size_on_disk == entry.size + sum(p.stat().st_size for p in old)
    get_model("resnet18_ssl", progress=False)  # maps the file in place, drops the old copies
    assert not any(p.exists() for p in old)
    (entry,) = scan_cache()
    assert [(d.path, d.obsolete) for d in entry.derived] == [(derived_path(source), False)]


def test_cache_dir_argument_wins(served: Served, tmp_path: Path, isolated_cache: Path) -> None:
    server, files = served
    elsewhere = tmp_path / "elsewhere"
    path = download(f"{server.url}/{files['zip'].name}", progress=False, cache_dir=elsewhere)
    assert path == elsewhere / files["zip"].name and path.is_file()
    assert [e.path for e in scan_cache(elsewhere)] == [path]
    assert scan_cache() == [] and not isolated_cache.exists()
    assert clear_cache(cache_dir=elsewhere) == [path]


_FOLDER = """
import json, sys
from wsl_images.cache import get_cache_dir
before = str(get_cache_dir()), "torch" in sys.modules
import torch
print(json.dumps([before, str(torch.hub.get_dir())]))
"""


@pytest.mark.parametrize(
    "env",
    [{"TORCH_HOME": "/data/th"}, {"XDG_CACHE_HOME": "/data/xdg"}, {}],
    ids=["TORCH_HOME", "XDG_CACHE_HOME", "default"],
)
def test_the_default_folder_is_torch_hubs_without_importing_torch(env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("WSL_IMAGES_CACHE", "TORCH_HOME")}
    clean.pop("XDG_CACHE_HOME", None)
    out = subprocess.run(
        [sys.executable, "-c", _FOLDER],
        env={**clean, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (folder, _), hub = json.loads(out)
    assert folder == str(Path(hub) / "checkpoints")
    assert get_cache_dir("~/x") == Path.home() / "x"


def test_a_layout_that_cannot_be_kept_costs_only_a_parse(
    served: Served,
    register_file: Callable[[str, str], None],
    isolated_cache: Path,
    state18: dict[str, torch.Tensor],
) -> None:
    # As in a cache where nothing can be written beside the files (here: a file where the
    # derived folder should be; as root, permissions would not stop the write).
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")
    download("resnet18_ssl", progress=False)
    blocker = isolated_cache / ".wsl-images" / "derived"
    blocker.rmdir()
    blocker.write_bytes(b"not a folder")
    for _ in range(2):
        model = get_model("resnet18_ssl", progress=False)
        for key, value in state18.items():
            assert torch.equal(model.state_dict()[key], value), key
    assert blocker.read_bytes() == b"not a folder"


def _held(monkeypatch: pytest.MonkeyPatch, *held: Path) -> None:
    """Removing ``held`` is refused, as Windows refuses to delete a file a process maps."""
    real = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self in held:
            msg = "The process cannot access the file because it is being used by another process"
            raise PermissionError(13, msg, str(self))
        real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)


def test_clear_removes_everything_else_and_names_a_file_it_could_not_remove(
    filled: dict[str, Path], isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = derived_path(filled["legacy"])
    _held(monkeypatch, filled["legacy"])  # a model loaded from it maps it (Windows)
    with pytest.raises(ClearCacheError) as info:
        clear_cache()
    err = info.value
    assert err.removed == [filled["zip"]]
    assert [path for path, _ in err.failed] == [filled["legacy"]]
    text = str(err)
    assert f"{filled['legacy']}: The process cannot access the file" in text
    assert "a model loaded from it" in text and "`wsl-images cache clear NAME`" in text
    assert not filled["zip"].exists() and _records.read(filled["zip"]) is None
    # The file that stays is still the verified file it was: record and layout kept.
    assert filled["legacy"].exists() and layout.exists()
    (entry,) = scan_cache()
    assert entry.path == filled["legacy"] and entry.verified


def test_clear_on_the_command_line_reports_what_was_left(
    filled: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wsl_images.cli import main

    _held(monkeypatch, filled["legacy"])
    assert main(["cache", "clear"]) == 1
    out, err = capsys.readouterr()
    assert out == f"removed {filled['zip']}\n"
    assert f"could not be removed and were left as they were:\n  {filled['legacy']}: " in err


def test_a_users_file_is_hashed_once_per_process_while_it_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint outside the cache, whose sha256 names what is derived from it: hashed once
    per process while its identity holds, hashed again once replaced; nothing is written."""
    monkeypatch.setattr(_records, "_hashed", {})
    hashed: list[Path] = []
    real = _records.sha256_of
    monkeypatch.setattr(_records, "sha256_of", lambda p: hashed.append(p) or real(p))
    ckpt = tmp_path / "finetuned.pth"
    ckpt.write_bytes(b"a" * 4096)
    first = file_sha256(ckpt)
    assert first == hashlib.sha256(b"a" * 4096).hexdigest()
    assert file_sha256(ckpt) == first and hashed == [ckpt]
    # Saved again as most tools save (a new file renamed over it), same size, mtime set back.
    stat = ckpt.stat()
    (tmp_path / "new.pth").write_bytes(b"b" * 4096)
    os.replace(tmp_path / "new.pth", ckpt)
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(ckpt) == hashlib.sha256(b"b" * 4096).hexdigest() and len(hashed) == 2
    assert sorted(tmp_path.iterdir()) == [ckpt]
