"""Tar shards: image members listed in archive order and decoded like files; damage is an entry."""

from __future__ import annotations

import io
import ntpath
import tarfile
from pathlib import Path, PureWindowsPath

import numpy as np
import pytest
from imagegen import webdataset_members, write_bad, write_good, write_tar

from wsl_images.errors import ImageDecodeError
from wsl_images.inference import TarMember, iter_members, load_image, split_member_path
from wsl_images.inference._crops import prepare


def _names(archive: Path) -> list[str]:
    return [m.name for m in iter_members(str(archive))]


def test_image_members_in_archive_order_and_no_sidecars(tmp_path: Path) -> None:
    members = webdataset_members(3)
    extra = [("b/x.PNG", b"p"), ("a.webp", b"w"), ("c.bmp", b"b"), ("d.jpeg", b"j")]
    archive = write_tar(tmp_path / "web.tar", members + extra + [("e.cls", b"1"), ("f.gif", b"")])
    with tarfile.open(archive, "a") as tar:  # a folder and a link are not inputs either
        tar.addfile(_dir("folder.jpg"))
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "000000.jpg"
        tar.addfile(link)
    listed = list(iter_members(str(archive)))
    assert [m.name for m in listed] == [
        "000000.jpg",
        "000001.jpg",
        "000002.jpg",
        "b/x.PNG",
        "a.webp",
        "c.bmp",
        "d.jpeg",
    ]
    assert listed[4].path == f"{archive}/a.webp"
    assert all(m.error is None for m in listed)
    assert listed[0].open().read() == members[0][1]  # exactly the member's bytes


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_members_decode_exactly_as_files(tmp_path: Path) -> None:
    good = write_good(tmp_path / "good")
    files = [p for p in good.values() if p.suffix in (".jpg", ".png")]  # gif is not a member type
    archive = write_tar(tmp_path / "modes.tar", [(p.name, p.read_bytes()) for p in files])
    listed = list(iter_members(str(archive)))
    assert [m.name for m in listed] == [p.name for p in files]
    for member, path in zip(listed, files, strict=True):
        from_tar, from_file = load_image(member.open()), load_image(path)
        assert from_tar.mode == "RGB" and from_tar.size == from_file.size, path.name
        np.testing.assert_array_equal(np.asarray(from_tar), np.asarray(from_file))


def test_bad_members_fail_with_the_messages_of_bad_files(tmp_path: Path) -> None:
    bad = write_bad(tmp_path / "bad")
    files = [bad[k] for k in ("empty", "truncated", "text", "bomb")]
    archive = write_tar(tmp_path / "bad.tar", [(p.name, p.read_bytes()) for p in files])
    for member, path in zip(iter_members(str(archive)), files, strict=True):
        with pytest.raises(ImageDecodeError) as from_file:
            load_image(path)
        with pytest.raises(ImageDecodeError) as from_tar:
            prepare(member, lambda image: image)  # the DataLoader workers' code path
        assert str(from_tar.value) == str(from_file.value), path.name


def _headers(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return tar.getmembers()


def _cut(archive: Path, size: int) -> None:
    data = archive.read_bytes()
    archive.write_bytes(data[:size])


def test_archive_cut_inside_a_member_lists_the_members_before_and_an_error(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "cut.tar", webdataset_members(3))
    second = list(iter_members(str(archive)))[1]
    _cut(archive, second.offset + second.size // 2)
    listed = list(iter_members(str(archive)))
    assert [m.name for m in listed] == ["000000.jpg", ""]
    assert listed[1].path == str(archive)
    assert "'000001.jpg' is cut off" in str(listed[1].error)
    assert "its 1 image member(s) before the damage were read" in str(listed[1].error)
    with pytest.raises(ImageDecodeError, match="damaged tar archive"):
        listed[1].open()


def test_archive_cut_between_members_or_with_a_bad_header(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "cut.tar", webdataset_members(2))
    end = _headers(archive)[-1]
    _cut(archive, end.offset_data + 512)  # the last member whole, the end-of-archive blocks gone
    listed = list(iter_members(str(archive)))
    assert [m.name for m in listed] == ["000000.jpg", "000001.jpg", ""]
    assert "no valid header" in str(listed[-1].error)

    archive = write_tar(tmp_path / "garbled.tar", webdataset_members(2))
    header = _headers(archive)[3].offset  # 000001.jpg's header
    data = bytearray(archive.read_bytes())
    data[header : header + 100] = b"x" * 100
    archive.write_bytes(bytes(data))
    listed = list(iter_members(str(archive)))
    assert [m.name for m in listed] == ["000000.jpg", ""]
    assert f"no valid header at byte {header}" in str(listed[-1].error)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"not a tar at all" * 100, "invalid header"), (None, "No such file")],
)
def test_unreadable_archive_is_one_error_entry(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    archive = tmp_path / "x.tar"
    if content is not None:
        archive.write_bytes(content)
    (entry,) = iter_members(str(archive))
    assert entry.path == str(archive) and entry.name == ""
    assert reason in str(entry.error) and "its 0 image member(s)" in str(entry.error)


def test_a_member_of_an_archive_that_shrank_is_that_inputs_error(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "x.tar", webdataset_members(1))
    (member,) = iter_members(str(archive))
    _cut(archive, member.offset + 10)
    with pytest.raises(ImageDecodeError, match=r"archive ends inside this member \(10 of"):
        member.open()
    gone = TarMember(str(tmp_path / "gone.tar"), "a.jpg", 0, 10)
    with pytest.raises(ImageDecodeError, match="cannot read tar archive: No such file"):
        gone.open()


def test_reading_a_member_never_extracts(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "x.tar", webdataset_members(2))
    before = sorted(tmp_path.rglob("*"))
    for member in iter_members(str(archive)):
        assert isinstance(member.open(), io.BytesIO)
    assert sorted(tmp_path.rglob("*")) == before


def test_member_paths_are_archive_slash_member_and_split_back_on_windows() -> None:
    """Simulated Windows paths: the archive as listed (backslashes), one "/", the tar name."""
    archive = str(PureWindowsPath("C:/data/shards/web.tar"))  # as iter_inputs lists it there
    member = TarMember(archive, "n01/x.jpg", 512, 9)
    assert member.path == "C:\\data\\shards\\web.tar/n01/x.jpg"
    assert ntpath.dirname(member.path) == "C:\\data\\shards\\web.tar/n01"  # a plain path

    files = {archive, "C:\\data\\a.tar\\b.TAR"}

    def split(path: str) -> tuple[str, str] | None:
        return split_member_path(path, is_file=files.__contains__, windows=True)

    assert split(member.path) == (archive, "n01/x.jpg")
    assert split("C:\\data\\shards\\web.tar\\n01\\x.jpg") == (archive, "n01/x.jpg")  # typed
    assert split("C:\\data\\a.tar\\b.TAR/k.tar/0.jpg") == ("C:\\data\\a.tar\\b.TAR", "k.tar/0.jpg")
    assert split("C:\\data\\shards\\web.tar") is None  # the archive itself: not a member
    assert split("C:\\data\\shards\\web.tar/") is None
    assert split("C:\\data\\photos\\1.jpg") is None


def test_member_paths_split_at_the_first_archive_that_is_a_file_on_posix() -> None:
    files = {"d/x.tar/m.tar", "a\\b.tar"}

    def split(path: str) -> tuple[str, str] | None:
        return split_member_path(path, is_file=files.__contains__, windows=False)

    assert split("d/x.tar/m.tar/k/0.jpg") == ("d/x.tar/m.tar", "k/0.jpg")  # x.tar: a folder
    assert split("d/x.tar/m.tar/k\\0.jpg") == ("d/x.tar/m.tar", "k\\0.jpg")  # a name's backslash
    assert split("a\\b.tar/0.jpg") == ("a\\b.tar", "0.jpg")  # a backslash in a POSIX name
    assert split("a/b.tar\\0.jpg") is None
