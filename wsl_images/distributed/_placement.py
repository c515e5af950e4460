"""Which GPU a rank uses under torchrun: one pure rule, from what it asked for and what it sees.

| asked for | GPUs the rank sees | ranks on the node | the rank uses |
|---|---|---|---|
| cuda (or auto) | n >= 1 | any | cuda:(local_rank % n) |
| cuda:N | 1 | any | cuda:0 if N == 0, else an error |
| cuda:N | n > 1 | 1 | cuda:N (N < n, else an error) |
| cuda:N | n > 1 | several or unknown | an error: all of them would share GPU N |
| any | 0 | any | an error |

Where every rank sees all the node's GPUs (torchrun's usual setup), local rank r takes GPU r.
Where each rank sees only its own (Slurm's GPU binding narrows CUDA_VISIBLE_DEVICES per rank, so
``torch.cuda.device_count()`` is 1 and LOCAL_RANK may be 3), each takes GPU 0: its own. The GPUs
a job uses are chosen with CUDA_VISIBLE_DEVICES, not with an index.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError

__all__ = ["gpu_for_rank"]


def gpu_for_rank(
    requested: torch.device, *, local_rank: int, local_world_size: int | None, visible: int
) -> torch.device:
    """The GPU a rank uses under torchrun, from what it asked for and the GPUs it sees.

    ``requested``: "cuda" or "cuda:N". ``local_rank``: the rank's number on its node;
    ``local_world_size``: the ranks on the node (None: unknown); ``visible``: the GPUs this
    process sees (``torch.cuda.device_count()``, after CUDA_VISIBLE_DEVICES).

    - "cuda": GPU ``local_rank % visible``. Where every rank sees all the node's GPUs (torchrun),
      local rank r takes GPU r; where each rank sees only its own (Slurm's GPU binding narrows
      CUDA_VISIBLE_DEVICES per rank), GPU 0, its own; with more ranks than GPUs they share.
    - "cuda:N": where it names one GPU per rank: each rank sees one GPU and N is 0, or the node
      runs one rank. Anything else would put every rank of the node on GPU N: an error that
      says to ask for "cuda" and choose the GPUs with CUDA_VISIBLE_DEVICES.
    """
    if visible < 1:
        msg = f"Device {str(requested)!r} requested but local rank {local_rank} sees no GPU."
        raise InvalidInputError(msg + " Check CUDA_VISIBLE_DEVICES, or use --device cpu.")
    index: int | None = requested.index  # None for "cuda"
    if index is None:
        return torch.device("cuda", local_rank % visible)
    if index >= visible:
        msg = (
            f"Device {str(requested)!r} requested but local rank {local_rank} sees {visible} "
            f"GPU(s) (cuda:0 to cuda:{visible - 1}): ask for 'cuda' (--device cuda), which "
            "gives each rank its own GPU."
        )
        raise InvalidInputError(msg)
    if visible == 1 or local_world_size == 1:
        return requested
    ranks = "ranks" if local_world_size is None else f"{local_world_size} ranks"
    msg = (
        f"Device {str(requested)!r} under torchrun would put the {ranks} of this node all on "
        f"GPU {index}: ask for 'cuda' (--device cuda), which gives local rank r GPU r, and "
        "choose the GPUs with CUDA_VISIBLE_DEVICES (e.g. CUDA_VISIBLE_DEVICES=2,3 torchrun "
        "--nproc-per-node=2 ...)."
    )
    raise InvalidInputError(msg)
