"""Fine-tune a pretrained wsl_images model with a new head on an ImageFolder dataset.

Single process:
    python examples/finetune.py DATA --model resnet50_swsl --epochs 10 --output-dir runs/ft
Several processes (one per GPU, or CPU processes with gloo):
    torchrun --nproc-per-node 4 examples/finetune.py DATA --model resnet50_swsl ...

DATA is a torchvision ImageFolder root (one sub-folder per class). After every epoch rank 0
writes OUTPUT_DIR/checkpoint.pth atomically ({"model", "optimizer", "scheduler", "epoch",
"classes", ...}) and appends a line to OUTPUT_DIR/metrics.jsonl; ``--resume`` continues from
that checkpoint. The checkpoint loads back as a model with
``wsl_images.get_model(NAME, checkpoint_path=".../checkpoint.pth", num_classes=len(classes))``,
and labels images with its class names as it is:
``wsl-images classify --checkpoint OUTPUT_DIR/checkpoint.pth PHOTOS -o labels.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets
from torchvision.transforms import v2

import wsl_images
from wsl_images.zoo import IMAGENET_MEAN, IMAGENET_STD

CHECKPOINT = "checkpoint.pth"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data", type=Path, help="ImageFolder root: one sub-folder of images per class")
    p.add_argument("--model", default="resnet50_swsl", help="one of wsl_images.list_models()")
    p.add_argument("--checkpoint", help="start from this state dict instead of the released one")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (cosine decay)")
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--output-dir", type=Path, default=Path("runs/finetune"))
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pth")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun a process group (nccl on GPU, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return rank, world, device


def build_data(args: argparse.Namespace, world: int, rank: int) -> tuple[Any, DataLoader[Any]]:
    transform = v2.Compose(
        [
            v2.RandomResizedCrop(args.image_size, scale=(0.35, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )
    dataset = datasets.ImageFolder(args.data, transform=transform)
    sampler = DistributedSampler(dataset, world, rank, seed=args.seed) if world > 1 else None
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=len(dataset) >= args.batch_size * world,  # steady BatchNorm statistics
        generator=torch.Generator().manual_seed(args.seed),
    )
    return dataset, loader


def build_model(args: argparse.Namespace, num_classes: int, rank: int, world: int) -> nn.Module:
    """The pretrained backbone with a new ``num_classes`` head (or the run's checkpoint)."""
    resume = args.output_dir / CHECKPOINT
    source = resume if args.resume and resume.is_file() else args.checkpoint
    # Rank 0 downloads (and converts) into the cache first; the others then read it from there.
    if world > 1 and rank != 0:
        dist.barrier()
    model = wsl_images.get_model(
        args.model, checkpoint_path=source, num_classes=num_classes, progress=rank == 0
    )
    if world > 1 and rank == 0:
        dist.barrier()
    return model


def save_atomically(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private to the user
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def train_epoch(model: nn.Module, loader: DataLoader[Any], opt: Any, device: torch.device) -> float:
    """One pass over this process's shard; returns the mean loss over all processes."""
    model.train()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, sample count
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += torch.stack([loss.detach().double() * len(labels), total.new_tensor(len(labels))])
    if dist.is_initialized():
        dist.all_reduce(total)
    return float(total[0] / total[1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rank, world, device = setup_distributed()
    torch.manual_seed(args.seed)  # the same new head on every process (DDP also broadcasts it)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    dataset, loader = build_data(args, world, rank)
    model = build_model(args, len(dataset.classes), rank, world).to(device)
    if world > 1:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    start = 0
    resume = args.output_dir / CHECKPOINT
    if args.resume and resume.is_file():
        state = torch.load(resume, map_location=device, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sched.T_max = args.epochs  # --epochs may have been raised to train longer
        start = state["epoch"] + 1
    for epoch in range(start, args.epochs):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)  # a different shuffle every epoch
        loss = train_epoch(model, loader, opt, device)
        sched.step()
        if rank == 0:
            bare = model.module if isinstance(model, DistributedDataParallel) else model
            save_atomically(
                {
                    "model": bare.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch,
                    "model_name": args.model,
                    "classes": dataset.classes,
                },
                resume,
            )
            line = {"epoch": epoch, "loss": loss, "lr": sched.get_last_lr()[0], "world": world}
            with open(args.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
