"""Download benchmark: wsl-images' cache vs torch.hub.download_url_to_file vs curl, side by side.

    python benchmarks/download.py [--capped-mb 64 350] [--rate-mb 25] [--loopback-mb 256]
                                  [--repeat 3] [--clients wsl-images torch.hub curl] [--portable]

A loopback server (tests/faultserver.py, in its own process so it does not share our GIL)
serves random files, named with their sha256 prefix:
  (a) capped     each response capped at --rate-mb MB/s (a CDN across a long path, the normal
                 case for these files); limit: size / (rate x connections)
  (b) loopback   as fast as the machine goes (a LAN mirror); limits: reading the file from the
                 page cache, and sha256 of it (a verified download cannot beat the larger one)
  (c) drop       the connection is cut once when the body reaches 50% of the file; reported:
                 bytes served until each client holds the whole file (torch.hub and curl fail
                 on the drop, so a user runs them again: curl with ``-C -`` resumes, torch.hub
                 starts over)
torch.hub runs with its hash check (hash_prefix); curl has none. Rounds rotate the clients' order
and the best of --repeat is reported (this machine is shared: the minimum is the least disturbed).

--clients runs only the clients named (torch.hub stays the reference if it runs, else the first);
--capped-mb with no sizes skips (a). --portable removes os.pread, os.pwrite and os.preadv from
this process before wsl_images is imported, as on Windows, so the cache takes its portable path
(per-thread file handles with seek + read/write): run it with and without to compare the paths.
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
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

Client = Callable[[str, Path], None]


def _serve(paths: list[Path], rate: float) -> None:
    """Child process: serve ``paths`` under the benchmark's routes, print the URL, run forever."""
    from faultserver import Faults, FaultServer

    files: dict[str, Path] = {}
    for path in paths:
        for kind in ("plain", "capped", "drop-ours", "drop-torch", "drop-curl"):
            files[f"{kind}/{path.name}"] = path
    server = FaultServer(files)
    for path in paths:
        server.faults[f"capped/{path.name}"] = Faults(rate=rate)
        for who in ("ours", "torch", "curl"):
            server.faults[f"drop-{who}/{path.name}"] = Faults(drop_at=path.stat().st_size // 2)
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


CLIENTS: dict[str, Client] = {"wsl-images": _ours, "torch.hub": _torch, "curl": _curl}


def _fresh_dest() -> Path:
    dest = WORK / "dest"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    return dest


def _best_times(url: str, repeat: int) -> dict[str, float]:
    """Best wall time per client, rounds rotating the order (no client always goes first)."""
    names = list(CLIENTS)
    best = dict.fromkeys(names, float("inf"))
    for round_ in range(repeat):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for who in order:
            dest = _fresh_dest()
            start = time.perf_counter()
            CLIENTS[who](url, dest)
            best[who] = min(best[who], time.perf_counter() - start)
    return best


def _page_cache_read(path: Path) -> float:
    """Seconds to read the (page-cached) file once: a lower bound for receiving it."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 << 20)
        while f.readinto(buf):
            pass
    return time.perf_counter() - start


def _sha256_time(path: Path) -> float:
    from wsl_images.cache import sha256_of

    start = time.perf_counter()
    sha256_of(path)
    return time.perf_counter() - start


def _until_complete(fn: Client, url: str) -> int:
    """Run a client, rerun it after a failure (as a user would), return attempts."""
    dest = _fresh_dest()
    for attempt in range(1, 4):
        try:
            fn(url, dest)
            return attempt
        except Exception:
            continue
    return -1


def _print_times(times: dict[str, float], size: int, limit: float, limit_text: str) -> None:
    ref_name = "torch.hub" if "torch.hub" in times else next(iter(times))
    ref = times[ref_name]
    for who, t in times.items():
        print(
            f"  {who:<11} {t:7.2f} s  {size / 1e6 / t:8.1f} MB/s  {ref / t:5.2f}x {ref_name}  "
            f"{t / limit:5.2f}x the limit"
        )
    print(f"  limit       {limit:7.2f} s  ({limit_text})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capped-mb", type=int, nargs="*", default=[64, 350])
    parser.add_argument("--rate-mb", type=float, default=25.0)
    parser.add_argument("--loopback-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    parser.add_argument("--portable", action="store_true", help="without pread/pwrite/preadv")
    parser.add_argument("--serve", type=Path, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return _serve(args.serve, args.rate_mb * 1e6)
    for name in [n for n in CLIENTS if n not in args.clients]:
        del CLIENTS[name]
    if args.portable:
        for call in ("pread", "pwrite", "preadv"):
            if hasattr(os, call):
                delattr(os, call)
    from wsl_images.cache import TransferOptions

    parts = TransferOptions.from_env().parts
    capped = [_make_file(mb) for mb in args.capped_mb]
    loop = _make_file(args.loopback_mb)
    paths = sorted({*capped, loop})
    serve = [sys.executable, __file__, "--rate-mb", str(args.rate_mb), "--serve", *map(str, paths)]
    child = subprocess.Popen(serve, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    base = child.stdout.readline().strip()
    load = os.getloadavg()[0]
    mode = " (portable path: no pread/pwrite/preadv)" if args.portable else ""
    print(f"loopback server, {os.cpu_count()} CPUs (load {load:.1f}), best of {args.repeat}{mode}")
    try:
        for path in capped:
            size = path.stat().st_size
            rate = args.rate_mb * 1e6
            print(f"(a) {size / 1e6:.0f} MB, each connection capped at {args.rate_mb:g} MB/s:")
            times = _best_times(f"{base}/capped/{path.name}", args.repeat)
            _print_times(
                times, size, size / (rate * parts), f"{parts} connections x {args.rate_mb:g} MB/s"
            )
        size = loop.stat().st_size
        print(f"(b) {size / 1e6:.0f} MB over loopback (a fast LAN mirror):")
        times = _best_times(f"{base}/plain/{loop.name}", args.repeat)
        read, sha = _page_cache_read(loop), _sha256_time(loop)
        _print_times(
            times, size, max(read, sha), f"sha256 {sha:.2f} s, page-cache read {read:.2f} s"
        )
        print(f"(c) {size / 1e6:.0f} MB, connection cut at 50%: bytes served until complete")
        for who, fn in CLIENTS.items():
            short = {"wsl-images": "ours", "torch.hub": "torch"}.get(who, who)
            attempts = _until_complete(fn, f"{base}/drop-{short}/{loop.name}")
            with urllib.request.urlopen(f"{base}/_stats") as resp:
                served = json.load(resp).get(f"drop-{short}/{loop.name}", 0)
            print(f"  {who:<11} {served / size:5.2f}x file size, {attempts} run(s)")
    finally:
        child.stdin.close()
        child.wait()
        shutil.rmtree(WORK / "dest", ignore_errors=True)


if __name__ == "__main__":
    main()
