"""The input order, the listing a sharded run keeps, and the batches a rank runs."""

from __future__ import annotations

import io
import os
from pathlib import Path

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
    (tmp_path / "linked").symlink_to(tmp_path / "real")  # symlinked folders: not followed
    (tmp_path / "g.jpg").symlink_to(tmp_path / "a.jpg")  # symlinked files: listed
    exts = image_extensions()
    expected = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in exts)
    assert list(walk_files(tmp_path, exts)) == expected
    assert tmp_path / "g.jpg" in expected and not any("linked" in str(p) for p in expected)


def test_inputs_as_given_folders_sorted_tars_expanded_in_place(tmp_path: Path) -> None:
    _touch(tmp_path, ["d/b.jpg", "d/z.png", "d/notes.txt", "one.jpg"])
    write_tar(tmp_path / "d" / "m.tar", webdataset_members(2))
    write_tar(tmp_path / "given.TAR", webdataset_members(1, seed=7))
    items = ["one.jpg", str(tmp_path / "d"), str(tmp_path / "given.TAR"), "missing.png"]
    got = [entry_path(e) for e in iter_inputs(items)]
    d = tmp_path / "d"
    assert got == [
        "one.jpg",
        f"{d}/b.jpg",
        f"{d}/m.tar/000000.jpg",
        f"{d}/m.tar/000001.jpg",
        f"{d}/z.png",
        f"{tmp_path}/given.TAR/000007.jpg",
        "missing.png",  # an error when it is read, as today
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
    ],
)
def test_entries_round_trip_on_one_line(entry: Entry) -> None:
    line = encode(entry)
    assert "\n" not in line and decode(line) == entry and decode(line.encode()) == entry


def _entries(n: int) -> list[Entry]:
    member = TarMember("t.tar", "x.jpg", 512, 9)
    return [f"img{i}.jpg" if i % 3 else member for i in range(n)]


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
