"""Who fetches which bytes: pieces in file order, a grown first piece, splits of the busiest."""

from __future__ import annotations

import time

from wsl_images.cache._pieces import Piece, Plan


def _write(plan: Plan, piece: Piece, size: int, *, extendable: bool = False) -> int:
    """Receive ``size`` bytes for ``piece``; how many were its own."""
    offset, count = plan.claim(piece, size, extendable=extendable)
    assert offset == piece.written  # one writer per piece: bytes land in order
    piece.written += count
    return count


def test_pieces_are_handed_out_in_file_order_then_split() -> None:
    plan = Plan(100, piece_size=30, min_piece=5)
    taken = [plan.take() for _ in range(4)]
    assert [(p.start, p.end) for p in taken if p] == [(0, 30), (30, 60), (60, 90), (90, 100)]
    _write(plan, taken[3], 10)  # the last piece is done
    # No piece left: the next taker gets the back half of the piece with most bytes to come.
    _write(plan, taken[0], 10)
    back = plan.take()
    assert back is not None and (back.start, back.end) == (45, 60)
    assert taken[1] is not None and taken[1].end == 45
    assert [(p.start, p.end) for p in plan.pieces] == [
        (0, 30),
        (30, 45),
        (45, 60),
        (60, 90),
        (90, 100),
    ]


def test_a_cut_piece_stops_at_its_new_end() -> None:
    plan = Plan(40, piece_size=40, min_piece=5)
    first = plan.take()
    assert first is not None and _write(plan, first, 10) == 10
    back = plan.take()
    assert back is not None and (back.start, back.end) == (25, 40)
    assert _write(plan, first, 30) == 15  # only up to the cut: the rest is the other's
    assert _write(plan, first, 5) == 0


def test_small_remainders_are_not_split() -> None:
    plan = Plan(20, piece_size=20, min_piece=8)
    first = plan.take()
    assert first is not None and _write(plan, first, 5) == 5
    assert plan.take() is None  # 15 bytes left: halves would be below min_piece


def test_the_first_piece_grows_while_nobody_has_the_next_bytes() -> None:
    plan = Plan(100, piece_size=30, min_piece=5)
    first = plan.take()
    assert first is not None
    assert _write(plan, first, 50, extendable=True) == 30
    assert _write(plan, first, 20, extendable=True) == 20  # grew into the next piece
    assert (first.end, plan.next) == (60, 60)
    helper = plan.take()  # a helper takes the next piece: the first cannot grow into it
    assert helper is not None and helper.start == 60
    assert _write(plan, first, 20, extendable=True) == 10
    assert _write(plan, first, 10, extendable=True) == 0


def test_the_frontier_follows_the_written_prefix_even_when_a_passed_piece_grows() -> None:
    plan = Plan(100, piece_size=30, min_piece=5)
    first = plan.take()
    assert first is not None
    _write(plan, first, 30, extendable=True)
    assert plan.frontier() == 30  # the whole first piece is written: the frontier passes it
    first_end = _write(plan, first, 1, extendable=True)
    assert first_end == 1 and first.end == 60
    # The piece grew after the frontier passed it: the frontier must not jump to its new end.
    assert plan.frontier() == 31
    helper = plan.take()
    assert helper is not None
    _write(plan, helper, 30)
    assert plan.frontier() == 31  # later bytes do not move it past the gap
    _write(plan, first, 29, extendable=True)
    assert plan.frontier() == 90
    assert not plan.done() and plan.work_left() == 10


def test_a_piece_about_to_finish_is_not_split() -> None:
    plan = Plan(100, piece_size=100, min_piece=5, min_split_s=0.2)
    piece = plan.take()
    assert piece is not None and _write(plan, piece, 50) == 50
    piece.began = time.monotonic() - 0.01  # 50 bytes in 10 ms: the other 50 take ~10 ms
    assert plan.take() is None  # splitting would gain ~5 ms and waste what is in flight
    piece.began = time.monotonic() - 10.0  # 50 bytes in 10 s: 10 s to go
    back = plan.take()
    assert back is not None and (back.start, back.end) == (75, 100)
