"""The one atomic-write helper: whole files or nothing, and no temp file outlives its writer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from imagegen import photo
from platforms import needs_proc_fd, needs_symlinks

from wsl_images._util import _atomic as atomic
from wsl_images._util import _temps as temps
from wsl_images.errors import FileInUseError

FILES = Path(__file__).parent


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if atomic.is_temp_name(p.name))


def test_published_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError), atomic.atomic_file(target) as tmp:
        os.write(tmp.fd, b"half of the new")
        1 / 0  # noqa: B018
    assert target.read_text() == "old" and _temps(tmp_path) == []
    with atomic.atomic_file(target) as tmp, open(tmp.fd, "w", closefd=False) as out:
        out.write("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new" and _temps(tmp_path) == []


@needs_symlinks
def test_a_planted_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "out").symlink_to(victim)
    with atomic.atomic_file(tmp_path / "out") as tmp:
        os.write(tmp.fd, b"data")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "out").is_symlink() and (tmp_path / "out").read_text() == "data"


def test_folder_moves_every_file_the_named_one_last(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    with atomic.atomic_folder(target) as work:
        (work / "m.onnx").write_text("graph")
        (work / "m.onnx.data").write_text("weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    with pytest.raises(RuntimeError), atomic.atomic_folder(tmp_path / "n.onnx") as work:
        (work / "n.onnx").write_text("graph")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


_HOLD = """
import sys, time
from wsl_images._util import atomic_file, atomic_folder
with ({kind})(sys.argv[1]) as tmp:
    print("ready", flush=True)
    time.sleep(600)
"""


def _hold(tmp_path: Path, kind: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(kind=kind), str(tmp_path / "result.jsonl")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.parametrize("kind", ["atomic_file", "atomic_folder"])
def test_a_killed_writers_temp_is_removed_a_live_ones_kept(tmp_path: Path, kind: str) -> None:
    killed, live = _hold(tmp_path, kind), _hold(tmp_path, kind)
    try:
        killed.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
        killed.wait()
        assert len(_temps(tmp_path)) == 2
        assert len(atomic.cleanup_stale(tmp_path)) == 1
        (left,) = _temps(tmp_path)
        assert f"~{live.pid}~" in left
    finally:
        live.kill()
        live.wait()


def test_a_day_of_silence_is_abandoned_whoever_wrote_it(tmp_path: Path) -> None:
    other_host = tmp_path / ".x.bin~elsewhere.1~123~ab12.part"
    other_host.write_bytes(b"x")
    assert atomic.cleanup_stale(tmp_path) == []  # another host's writer may be alive
    old = time.time() - 25 * 3600
    os.utime(other_host, (old, old))
    assert atomic.cleanup_stale(tmp_path) == [other_host]


class FakeWindows:
    """kernel32 as seen by _alive_windows: a table of pid -> exit code (None: access denied)."""

    def __init__(self, processes: dict[int, int | None]) -> None:
        self.processes, self.closed = processes, 0
        self.last = 0

    def open(self, pid: int) -> int | None:
        if pid not in self.processes:
            self.last = 87  # ERROR_INVALID_PARAMETER: no such process
            return None
        if self.processes[pid] is None:
            self.last = 5
            return None
        return pid

    def access_denied(self) -> bool:
        return self.last == 5

    def exit_code(self, handle: int) -> int | None:
        return self.processes[handle]

    def close(self, handle: int) -> None:
        self.closed += 1


def test_windows_liveness_asks_for_an_exit_code_and_never_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "kill", lambda *a: pytest.fail("os.kill would end the process"))
    api = FakeWindows({10: 259, 11: 0, 12: None})  # running, exited, another user's
    alive = [temps._alive_windows(pid, api) for pid in (10, 11, 12, 13)]  # type: ignore[arg-type]
    assert alive == [True, False, True, False]
    assert api.closed == 2  # every opened handle is closed


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
    proc.wait()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "wsl_images", *args]


def test_killed_classify_and_export_leave_nothing_after_the_next_run(
    tmp_path: Path, served: tuple[object, dict[str, Path]]
) -> None:
    checkpoint = str(served[1]["zip"])
    images = tmp_path / "images"
    images.mkdir()
    for i in range(400):
        photo(seed=i).save(images / f"{i:03d}.jpg")
    out = tmp_path / "out"
    out.mkdir()
    common = [
        "--model", "resnet18_ssl", "--checkpoint", checkpoint, "--no-progress", "--device", "cpu"
    ]  # fmt: skip
    classify = [*_cli("classify", *common, "--workers", "0", "--batch-size", "1")]
    proc = subprocess.Popen(
        [*classify, "--format", "jsonl", "-o", str(out / "x.jsonl"), str(images)]
    )
    _kill_when(proc, lambda: bool(_temps(out)))
    (killed_classify,) = _temps(out)
    export = _cli("export", "resnet18_ssl", "--checkpoint", checkpoint, "--format", "torchscript")
    proc = subprocess.Popen([*export, "-o", str(out / "m.pt")])
    _kill_when(proc, lambda: any(name.startswith(".m.pt~") for name in _temps(out)))
    # The export's first write into the folder removed the killed classify's temp file.
    (killed_export,) = _temps(out)
    assert killed_classify.startswith(".x.jsonl~") and killed_export.startswith(".m.pt~")
    assert (out / killed_export).is_dir() and list(out.iterdir()) == [out / killed_export]
    one = tmp_path / "one.jpg"
    photo().save(one)
    subprocess.run([*classify, "-o", str(out / "y.txt"), str(one)], check=True)
    assert _temps(out) == [] and sorted(p.name for p in out.iterdir()) == ["y.txt"]


def _open_on(path: Path) -> bool:
    """Whether this process has a descriptor open on ``path`` (Linux: /proc/self/fd)."""
    fds = Path("/proc/self/fd")
    return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir())


@needs_proc_fd
def test_the_temp_file_is_closed_before_it_is_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows renames no open file (and deletes none): the rename must come after the close.
    seen: list[bool] = []
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(_open_on(Path(src)))
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with atomic.atomic_file(tmp_path / "out.bin") as tmp:
        os.write(tmp.fd, b"data")
    assert seen == [False] and (tmp_path / "out.bin").read_bytes() == b"data"


def _refuse(times: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """os.replace refused ``times`` times, as Windows does while another process holds the
    target open or mapped; returns the targets of every attempt."""
    attempts: list[str] = []
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        attempts.append(str(dst))
        if len(attempts) <= times:
            msg = "The process cannot access the file because it is being used by another process"
            raise PermissionError(13, msg, str(dst))
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    monkeypatch.setattr(atomic, "_REPLACE_WAIT_S", 0.001)  # the waits are not what is tested
    monkeypatch.setattr(atomic, "_REPLACE_WAIT_MAX_S", 0.001)
    return attempts


def test_a_briefly_held_target_is_replaced_after_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    attempts = _refuse(3, monkeypatch)  # an antivirus scan that lets go
    with atomic.atomic_file(target) as tmp:
        os.write(tmp.fd, b"new")
    assert target.read_bytes() == b"new" and len(attempts) == 4 and _temps(tmp_path) == []


def test_a_target_held_for_good_is_named_and_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    attempts = _refuse(10**6, monkeypatch)
    with pytest.raises(FileInUseError) as info, atomic.atomic_file(target) as tmp:
        os.write(tmp.fd, b"new")
    text = str(info.value)
    assert f"Cannot replace {str(target)!r}" in text and "being used by another process" in text
    assert "holds it open or mapped" in text and "free the model" in text
    assert isinstance(info.value, PermissionError)  # `except PermissionError` still works
    assert len(attempts) == atomic._REPLACE_TRIES
    assert target.read_bytes() == b"old" and _temps(tmp_path) == []  # nothing half-done
    with pytest.raises(FileInUseError), atomic.atomic_folder(tmp_path / "m.onnx") as work:
        (work / "m.onnx").write_text("graph")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]
