"""Which connection fetches which bytes: pieces in file order, and a split of the busiest piece
when none is left, so every connection stays busy to the end.

The bytes ``[0, total)`` are cut as they are handed out: a connection asks for the next piece in
file order; the first connection, whose response runs to the end of the file, simply keeps
reading while the bytes after its piece are still unassigned (on a fast link it fetches the whole
file alone, in one response). When no piece is left, a free connection takes the back half of
the piece with the most bytes still to come; that piece's connection stops at the new end.
Pieces stay sorted and contiguous, so the hash can follow the written prefix.

Each piece has one writer: ``claimed`` bytes were handed to it, ``written`` are on disk. Methods
are called with :attr:`Plan.cond` held.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

__all__ = ["Piece", "Plan"]


@dataclass
class Piece:
    """Bytes ``[start, end)`` of the file; ``end`` moves when the piece grows or is split."""

    start: int
    end: int
    claimed: int  # bytes below this are being written or written by the piece's connection
    written: int  # bytes below this are in the file
    began: float = field(default_factory=time.monotonic)  # when it was handed out

    @property
    def left(self) -> int:
        """Bytes not yet claimed."""
        return self.end - self.claimed


class Plan:
    """The pieces of one download of ``total`` bytes."""

    def __init__(
        self, total: int, *, piece_size: int, min_piece: int, min_split_s: float = 0.0
    ) -> None:
        self.total, self.piece_size, self.min_piece = total, piece_size, min_piece
        self.min_split_s = min_split_s
        self.pieces: list[Piece] = []
        self.next = 0  # first byte not in any piece
        self.cond = threading.Condition()
        self._hashed = 0  # index of the first piece the frontier has not passed

    def take(self) -> Piece | None:
        """The next piece in file order, else the back half of the busiest one, else None."""
        if self.next < self.total:
            piece = Piece(
                self.next, min(self.next + self.piece_size, self.total), self.next, self.next
            )
            self.next = piece.end
            self.pieces.append(piece)
            return piece
        busiest = max(self.pieces, key=lambda p: p.left, default=None)
        if busiest is None or busiest.left < 2 * self.min_piece or self._ends_soon(busiest):
            return None
        mid = busiest.claimed + busiest.left // 2
        piece = Piece(mid, busiest.end, mid, mid)
        busiest.end = mid
        self.pieces.insert(self.pieces.index(busiest) + 1, piece)
        return piece

    def _ends_soon(self, piece: Piece) -> bool:
        """True if ``piece``'s connection, at its rate so far, ends within ``min_split_s``:
        a split would then gain little, and waste what the server already sent past the cut."""
        elapsed = time.monotonic() - piece.began
        got = piece.written - piece.start
        if self.min_split_s <= 0 or got <= 0 or elapsed <= 0:
            return False
        return piece.left / (got / elapsed) < self.min_split_s

    def extend(self, piece: Piece) -> bool:
        """Grow ``piece`` by the next piece's bytes if nobody has them (True if it grew)."""
        if piece.end != self.next or self.next >= self.total:
            return False
        self.next = piece.end = min(self.next + self.piece_size, self.total)
        # The grown piece is the last one; the frontier may have passed it when it was whole.
        self._hashed = min(self._hashed, len(self.pieces) - 1)
        return True

    def claim(self, piece: Piece, size: int, *, extendable: bool) -> tuple[int, int]:
        """(offset, count): where the next ``size`` received bytes of ``piece`` go, and how many
        of them are still its own (0: the piece is finished or was cut; stop reading)."""
        if piece.left == 0 and extendable:
            self.extend(piece)
        count = min(size, piece.left)
        offset = piece.claimed
        piece.claimed += count
        return offset, count

    def frontier(self) -> int:
        """End of the contiguous written prefix of the file."""
        while self._hashed < len(self.pieces):
            piece = self.pieces[self._hashed]
            if piece.written < piece.end:
                return piece.written
            self._hashed += 1
        return self.next

    def work_left(self) -> int:
        """Bytes nobody has claimed yet."""
        return self.total - self.next + sum(p.left for p in self.pieces)

    def done(self) -> bool:
        return self.next == self.total and all(p.written == p.end for p in self.pieces)
