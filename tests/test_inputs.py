"""The input order, the listing a sharded run keeps, and the batches a rank runs."""

from __future__ import annotations

import io
import os
from pathlib import Path, PureWindowsPath

import pytest
from imagegen import webdataset_members, write_tar

from wsl_images.inference import (
    Entry,
    TarMember,
    decode,
    encode,
    entry_path,
    image_extensions,
    iter_inputs,
    read_lines,
    walk_files,
)
from wsl_images.jobs import INDEX_FILE, LISTING_FILE
from wsl_images.jobs._listing import Listing, ListingInfo, write_listing
from wsl_images.jobs._shards import ShardBatches


def _touch(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_walk_is_the_order_of_sorted_rglob(tmp_path: Path) -> None:
    names = ["a/x.jpg", "a.jpg", "a-b.jpg", "B.jpg", "b/c/d.png", ".hidden.jpg", "a b/e.jpg"]
    _touch(tmp_path, [*names, "b/notes.txt", "real/f.jpg"])
    try:
        (tmp_path / "linked").symlink_to(tmp_path / "real")  # symlinked folders: not followed
        (tmp_path / "g.jpg").symlink_to(tmp_path / "a.jpg")  # symlinked files: listed
    except OSError:  # Windows without the symlink privilege: the order is checked all the same
        links = False
    else:
        links = True
    exts = image_extensions()
    found = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in exts]
    # sorted(rglob) as on POSIX: names compared exactly, so the order is the same on every
    # platform (Windows paths sort ignoring case; the walk does not).
    expected = sorted(found, key=lambda p: p.relative_to(tmp_path).parts)
    assert list(walk_files(tmp_path, exts)) == expected
    assert expected.index(tmp_path / "B.jpg") < expected.index(tmp_path / "a.jpg")
    assert not links or (tmp_path / "g.jpg" in expected)
    assert not any("linked" in str(p) for p in expected)


def test_inputs_as_given_folders_sorted_tars_expanded_in_place(tmp_path: Path) -> None:
    _touch(tmp_path, ["d/b.jpg", "d/z.png", "d/notes.txt", "one.jpg"])
    write_tar(tmp_path / "d" / "m.tar", webdataset_members(2))
    write_tar(tmp_path / "given.TAR", webdataset_members(1, seed=7))
    items = ["one.jpg", str(tmp_path / "d"), str(tmp_path / "given.TAR"), "missing.png"]
    got = [entry_path(e) for e in iter_inputs(items)]
    d = tmp_path / "d"
    assert got == [
        "one.jpg",
        str(d / "b.jpg"),
        f"{d / 'm.tar'}/000000.jpg",  # the archive's path as listed, "/", the member's name
        f"{d / 'm.tar'}/000001.jpg",
        str(d / "z.png"),
        f"{tmp_path / 'given.TAR'}/000007.jpg",
        "missing.png",  # an error when it is read, as today
    ]


def test_member_paths_from_the_output_are_those_members_again(tmp_path: Path) -> None:
    """A path the output gives a member (a failed input, say) can be given as an input: it is
    that member, read in place; a name the archive lacks is that input's error."""
    (tmp_path / "x.tar").mkdir()  # a folder named like an archive: the split is not fooled
    archive = write_tar(tmp_path / "x.tar" / "m.tar", webdataset_members(3))
    write_tar(tmp_path / "y.tar", [("k/in.tar/0.jpg", b"not read here")])
    listed = list(iter_inputs([str(tmp_path)]))
    paths = [entry_path(e) for e in listed]
    assert paths[:3] == [f"{archive}/00000{i}.jpg" for i in range(3)]
    assert list(iter_inputs(paths)) == listed  # the same entries, offsets and all
    again = list(iter_inputs([paths[2], paths[0], f"{tmp_path}/y.tar/k/in.tar/0.jpg"]))
    assert again == [listed[2], listed[0], listed[3]]
    [lost] = iter_inputs([f"{archive}/999.jpg"])
    assert isinstance(lost, TarMember) and entry_path(lost) == f"{archive}/999.jpg"
    assert lost.error == f"no image member '999.jpg' in tar archive {str(archive)!r}"
    assert list(iter_inputs([f"{tmp_path}/missing.tar/0.jpg"])) == [
        str(tmp_path / "missing.tar" / "0.jpg")  # no archive there: a missing file, as before
    ]


def test_read_lines_skips_blank_lines_and_keeps_spaces() -> None:
    text = "a.jpg\r\n\n  \nb c.jpg\n d.jpg \n"
    assert list(read_lines(io.StringIO(text))) == ["a.jpg", "b c.jpg", " d.jpg "]


@pytest.mark.parametrize(
    "entry",
    [
        'we"ird\nname é.jpg',
        TarMember("a.tar", "k/0.jpg", 1536, 4096),
        TarMember("b.tar", "", error="damaged tar archive (x)"),
        TarMember(str(PureWindowsPath("C:/data/shards/web.tar")), "n01/0.jpg", 512, 9),
        str(PureWindowsPath("C:/data/photos/1.jpg")),
    ],
)
def test_entries_round_trip_on_one_line(entry: Entry) -> None:
    line = encode(entry)
    assert "\n" not in line and decode(line) == entry and decode(line.encode()) == entry


def _entries(n: int) -> list[Entry]:
    member = TarMember("t.tar", "x.jpg", 512, 9)
    windows = TarMember("C:\\data\\t.tar", "n01/x.jpg", 1024, 9)  # as listed on Windows
    return [f"img{i}.jpg" if i % 3 else (member if i % 2 else windows) for i in range(n)]


def test_listing_reads_back_one_shard_at_a_time(tmp_path: Path) -> None:
    entries = _entries(23)
    seen: list[ListingInfo] = []
    info = write_listing(tmp_path, iter(entries), shard_size=5, before_publish=seen.append)
    assert seen == [info] and info.count == 23
    listing = Listing(tmp_path, count=23, shard_size=5)
    assert listing.offsets[0] == 0 and len(listing.offsets) == 6  # 5 shards, and the end
    assert [listing.shard(k) for k in range(5)] == [entries[s : s + 5] for s in range(0, 23, 5)]
    assert list(listing) == entries and listing[22] == entries[22] and listing[3:7] == entries[3:7]
    with pytest.raises(IndexError):
        listing[23]


def test_listing_fingerprint_and_refusal_before_publishing(tmp_path: Path) -> None:
    first = write_listing(tmp_path, _entries(10), shard_size=4, before_publish=lambda _: None)
    again = write_listing(tmp_path, _entries(10), shard_size=4, before_publish=lambda _: None)
    assert first == again
    before = (tmp_path / LISTING_FILE).read_bytes(), (tmp_path / INDEX_FILE).read_bytes()

    def refuse(info: ListingInfo) -> None:
        assert info.count == 10 and info.fingerprint != first.fingerprint
        raise ValueError("refused")

    changed = _entries(10)
    changed[9] = "other.jpg"
    with pytest.raises(ValueError, match="refused"):
        write_listing(tmp_path, changed, shard_size=4, before_publish=refuse)
    after = (tmp_path / LISTING_FILE).read_bytes(), (tmp_path / INDEX_FILE).read_bytes()
    assert after == before and sorted(os.listdir(tmp_path)) == [INDEX_FILE, LISTING_FILE]


def test_batches_stay_inside_their_shard() -> None:
    batches = ShardBatches([0, 2, 4], shard_size=5, count=23, batch_size=2)
    assert list(batches) == [
        range(0, 2),
        range(2, 4),
        range(4, 5),
        range(10, 12),
        range(12, 14),
        range(14, 15),
        range(20, 22),
        range(22, 23),  # the last shard is short
    ]
    assert len(batches) == 8 and batches.images() == 13 and batches[-1] == range(22, 23)
    assert list(ShardBatches([], shard_size=5, count=23, batch_size=2)) == []
