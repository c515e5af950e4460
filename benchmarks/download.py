"""Download benchmark: wsl-images' cache vs torch.hub.download_url_to_file vs curl, side by side.

    python benchmarks/download.py [--size-mb 350] [--rate-mb 50] [--repeat 2]

A loopback server (tests/faultserver.py, in its own process so it does not share our GIL)
serves one random file under several paths:
  (a) plain            throughput
  (b) capped           each response capped at --rate-mb MB/s (a CDN across a long path)
  (c) drop             the connection is cut once when the body reaches 50% of the file;
                       reported: total bytes served until each client holds the whole file
                       (torch.hub and curl fail on the drop, so a user runs them again: curl
                       with ``-C -`` resumes, torch.hub starts over).
torch.hub runs with its hash check (hash_prefix); curl has none.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def _serve(path: Path, rate: float) -> None:
    """Child process: serve ``path`` under the benchmark's paths, print the URL, run forever."""
    from faultserver import Faults, FaultServer

    name = path.name
    files = {f"{kind}/{name}": path for kind in ("plain", "capped")}
    files |= {f"drop-{who}/{name}": path for who in ("ours", "torch", "curl")}
    server = FaultServer(files)
    server.faults[f"capped/{name}"] = Faults(rate=rate)
    for who in ("ours", "torch", "curl"):
        server.faults[f"drop-{who}/{name}"] = Faults(drop_at=path.stat().st_size // 2)
    handle = server._handle

    def with_stats(h: object) -> None:
        if getattr(h, "path", "") == "/_stats":
            body = json.dumps(dict(server.bytes_sent)).encode()
            h.send_response(200)  # type: ignore[attr-defined]
            h.send_header("Content-Length", str(len(body)))  # type: ignore[attr-defined]
            h.end_headers()  # type: ignore[attr-defined]
            h.wfile.write(body)  # type: ignore[attr-defined]
            return
        handle(h)  # type: ignore[arg-type]

    server._handle = with_stats  # type: ignore[method-assign]
    with server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def _make_file(size_mb: int) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    for old in WORK.glob(f"blob{size_mb}-*.bin"):
        return old
    tmp = WORK / "blob.tmp"
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        for _ in range(size_mb):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    path = WORK / f"blob{size_mb}-{digest.hexdigest()[:8]}.bin"
    tmp.replace(path)
    return path


def _ours(url: str, dest: Path) -> None:
    from wsl_images.cache import download_url

    download_url(url, cache_dir=dest, progress=False)


def _torch(url: str, dest: Path) -> None:
    import torch.hub

    prefix = url.rsplit("-", 1)[1].split(".")[0]
    torch.hub.download_url_to_file(url, str(dest / "f.bin"), hash_prefix=prefix, progress=False)


def _curl(url: str, dest: Path) -> None:
    cmd = ["curl", "-sS", "-f", "-C", "-", "-o", str(dest / "f.bin"), url]
    subprocess.run(cmd, check=True, capture_output=True)


CLIENTS = {"wsl-images": _ours, "torch.hub": _torch, "curl": _curl}


def _timed(fn: object, url: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        dest = WORK / "dest"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        start = time.perf_counter()
        fn(url, dest)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def _until_complete(fn: object, url: str) -> int:
    """Run a client, rerun it after a failure (as a user would), return attempts."""
    dest = WORK / "dest"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    for attempt in range(1, 4):
        try:
            fn(url, dest)  # type: ignore[operator]
            return attempt
        except Exception:
            continue
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=350)
    parser.add_argument("--rate-mb", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return _serve(args.serve, args.rate_mb * 1e6)
    import wsl_images.cache  # noqa: F401

    path = _make_file(args.size_mb)
    size = path.stat().st_size
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(path), "--rate-mb", str(args.rate_mb)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    base = child.stdout.readline().strip()
    try:
        _report(base, path.name, size, args)
    finally:
        child.stdin.close()
        child.wait()
        shutil.rmtree(WORK / "dest", ignore_errors=True)


def _report(base: str, name: str, size: int, args: argparse.Namespace) -> None:
    mb = size / 1e6
    print(f"file {mb:.0f} MB, loopback, {os.cpu_count()} CPUs, best of {args.repeat}")
    for kind, label in (("plain", "(a) throughput"), ("capped", f"(b) {args.rate_mb:g} MB/s cap")):
        times = {
            who: _timed(fn, f"{base}/{kind}/{name}", args.repeat) for who, fn in CLIENTS.items()
        }
        ref = times["torch.hub"]
        print(f"{label}:")
        for who, t in times.items():
            print(f"  {who:<11} {t:7.2f} s  {mb / t:8.1f} MB/s  {ref / t:5.2f}x torch.hub")
    print("(c) connection cut at 50%: bytes served until the file is complete")
    for who, fn in CLIENTS.items():
        short = who.split(".")[0].replace("wsl-images", "ours")
        attempts = _until_complete(fn, f"{base}/drop-{short}/{name}")
        with urllib.request.urlopen(f"{base}/_stats") as resp:
            served = json.load(resp).get(f"drop-{short}/{name}", 0)
        print(f"  {who:<11} {served / size:5.2f}x file size, {attempts} run(s)")


if __name__ == "__main__":
    main()
