"""Reading state-dict files: the zip and legacy (pre-1.6) formats, memory-mapped where the
caller allows, the tensor layout that lets a later load map a file without parsing it, and
putting the tensors into a model built on the meta device.

Owns: every byte of a checkpoint file that is read, and the rule that it is read with
``weights_only=True`` (torch's weights-only unpickler) and nothing else.
May use: ``errors``. Pure: it knows neither the cache nor the model table; callers hand it a
verified path and say whether it may be mapped.
"""

from __future__ import annotations

from ._assign import assign_state_dict, convert_in_place
from ._layout import map_tensors as map_layout
from ._reader import Checkpoint, StateDict, read_checkpoint, read_state_dict, read_with_layout

__all__ = [
    "Checkpoint",
    "StateDict",
    "assign_state_dict",
    "convert_in_place",
    "map_layout",
    "read_checkpoint",
    "read_state_dict",
    "read_with_layout",
]
