"""Which GPU each rank takes under torchrun, for the device counts of real setups (simulated:
this machine has no GPU): every rank sees every GPU, Slurm's one GPU per rank, more ranks than
GPUs, and explicit cuda:N."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from wsl_images.distributed import Context, gpu_for_rank, init_from_env
from wsl_images.errors import InvalidInputError

CUDA = torch.device("cuda")


def _gpus(requested: torch.device, *, ranks: int | None, visible: int) -> list[str]:
    return [
        str(gpu_for_rank(requested, local_rank=r, local_world_size=ranks, visible=visible))
        for r in range(ranks or 4)
    ]


def test_cuda_gives_each_rank_its_own_gpu_where_all_are_visible() -> None:
    assert _gpus(CUDA, ranks=8, visible=8) == [f"cuda:{r}" for r in range(8)]
    assert _gpus(CUDA, ranks=2, visible=8) == ["cuda:0", "cuda:1"]  # the first 2 of 8
    assert _gpus(CUDA, ranks=None, visible=4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]


def test_cuda_is_gpu_0_where_each_rank_sees_only_its_own() -> None:
    # Slurm's GPU binding: CUDA_VISIBLE_DEVICES narrowed per rank, so device_count() == 1 while
    # LOCAL_RANK goes up to 3: each rank's cuda:0 is its own GPU.
    assert _gpus(CUDA, ranks=4, visible=1) == ["cuda:0"] * 4
    assert _gpus(torch.device("cuda:0"), ranks=4, visible=1) == ["cuda:0"] * 4


def test_more_ranks_than_gpus_share_them_round_robin() -> None:
    assert _gpus(CUDA, ranks=4, visible=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]


def test_cuda_n_names_a_gpu_only_where_the_node_runs_one_rank() -> None:
    assert _gpus(torch.device("cuda:2"), ranks=1, visible=4) == ["cuda:2"]
    for ranks in (2, None):  # several ranks, or a launcher that does not say how many
        with pytest.raises(InvalidInputError) as err:
            gpu_for_rank(torch.device("cuda:1"), local_rank=0, local_world_size=ranks, visible=4)
        message = str(err.value)
        assert "'cuda:1' under torchrun would put the" in message
        assert "all on GPU 1" in message and "CUDA_VISIBLE_DEVICES" in message
        assert "ask for 'cuda'" in message


@pytest.mark.parametrize(
    ("requested", "ranks", "visible", "message"),
    [
        ("cuda:1", 4, 1, r"'cuda:1' requested but local rank 0 sees 1 GPU\(s\) \(cuda:0 to"),
        ("cuda:4", 1, 4, r"'cuda:4' requested but local rank 0 sees 4 GPU\(s\)"),
        ("cuda", 2, 0, r"'cuda' requested but local rank 0 sees no GPU. Check CUDA_VISIBLE_DEV"),
    ],
)
def test_gpus_that_are_not_there_are_refused(
    requested: str, ranks: int, visible: int, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        gpu_for_rank(torch.device(requested), local_rank=0, local_world_size=ranks, visible=visible)


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """CUDA present, with one visible GPU unless a test says otherwise."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    return monkeypatch


def test_a_context_places_its_rank_by_the_visible_gpus(gpus: pytest.MonkeyPatch) -> None:
    bound = Context(rank=7, world_size=8, local_rank=3, local_world_size=4)
    assert bound.device("cuda") == bound.device("auto") == torch.device("cuda", 0)
    assert bound.device("cpu") == torch.device("cpu")
    gpus.setattr(torch.cuda, "device_count", lambda: 4)
    assert bound.device("cuda") == torch.device("cuda", 3)
    with pytest.raises(InvalidInputError, match="'cuda:1' under torchrun would put the 4 ranks"):
        bound.device("cuda:1")
    # One process: the device as asked for, torchrun's rules do not apply.
    assert Context().device("cuda:1") == torch.device("cuda", 1)


def test_explicit_cuda_n_is_refused_before_joining(gpus: pytest.MonkeyPatch) -> None:
    gpus.setattr(torch.cuda, "device_count", lambda: 2)
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    for key, value in env.items():
        gpus.setenv(key, value)
    with pytest.raises(InvalidInputError, match="'cuda:1' under torchrun would put the 2 ranks"):
        init_from_env("cuda:1")
    assert not dist.is_initialized()
