"""JPEG decoding on the model's device, run on the CPU: torchvision's CPU ``decode_jpeg`` stands in
for nvJPEG (the same code path, the device a parameter). Routing, fallback, order, errors, the
share of work, the decode= and --decode choices; the GPU itself is tested in test_gpu.py."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from imagegen import halves, photo, write_bad, write_good, write_tar
from PIL import Image
from server import FileServer
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.functional import pil_to_tensor

from wsl_images import Classifier, evaluate
from wsl_images.cli import main
from wsl_images.errors import InvalidInputError
from wsl_images.evaluation import imagenet_wnids
from wsl_images.inference import Growing, load_image, make_batch_loader
from wsl_images.inference import _devdecode as devdecode
from wsl_images.inference._devdecode import DeviceDecoder, orient
from wsl_images.inference._jpeg import read_header
from wsl_images.inference._share import AdaptiveShare, Share
from wsl_images.zoo import geometry, get_weights

# torchvision 0.29 deprecates its image codecs (for TorchCodec); they still work, and are used.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)
Served = tuple[FileServer, dict[str, Path]]
REPO = Path(__file__).resolve().parents[1]
GEOMETRY = geometry(get_weights("resnet18_ssl").preprocessing)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode="gpu"/"auto" on a CPU model run the device path with the CPU's decode_jpeg."""
    monkeypatch.setattr(devdecode, "CPU_STANDS_IN", True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("img")
    found = {**write_good(folder / "good"), **write_bad(folder / "bad")}
    for i in range(5):
        found[f"photo{i}"] = folder / f"photo{i}.jpg"
        photo((90, 60), seed=i).save(found[f"photo{i}"], quality=90)
    found["progressive"] = folder / "progressive.jpg"
    photo((90, 60), seed=9).save(found["progressive"], quality=90, progressive=True)
    found["gray_jpeg"] = folder / "gray_jpeg.jpg"
    photo((90, 60), seed=8).convert("L").save(found["gray_jpeg"], quality=90)
    found["bad_table"] = folder / "bad_table.jpg"
    found["bad_table"].write_bytes(_undefined_huffman_table(photo((64, 48), seed=7)))
    return found


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


def _undefined_huffman_table(image: Image.Image) -> bytes:
    """A JPEG whose header reads well but whose scan names a Huffman table it never defines:
    both decoders refuse it, when they decode."""
    data = bytearray(_jpeg(image, quality=90))
    sos = data.find(b"\xff\xda")
    data[sos + 6] = 0x33  # the first component's DC/AC tables: 3, undefined
    return bytes(data)


# -- which files the device takes -----------------------------------------------------------


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
def test_baseline_colour_jpegs_go_to_the_device(subsampling: int) -> None:
    header = read_header(_jpeg(photo((50, 30)), quality=90, subsampling=subsampling))
    assert (header.width, header.height, header.orientation, header.reason) == (50, 30, 1, None)


def test_what_the_device_would_decode_differently_stays_on_the_cpu(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    reasons = {k: read_header(files[k].read_bytes()).reason for k in files if k != "missing"}
    assert reasons["progressive"] == "progressive, lossless or arithmetic-coded JPEG"
    assert reasons["gray_jpeg"] == "grayscale JPEG"
    assert reasons["cmyk"] == "Adobe JPEG (RGB, CMYK or YCCK colour transform)"
    assert reasons["truncated"] == "no end marker: the file is cut short"
    for name in ("gray", "palette", "rgba", "png16", "empty", "text", "bomb"):
        assert reasons[name] == "not a JPEG", name
    assert reasons["rgb"] is reasons["exif"] is reasons["bad_table"] is None
    xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta tiff:Orientation='6'/>"
    data = _jpeg(photo((50, 30)))
    with_xmp = data[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + data[2:]
    assert read_header(with_xmp).reason == "orientation in XMP"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's bomb limit decides
    assert read_header(data).reason == "more pixels than Pillow's limit"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(photo((64, 40), seed=orientation), exif=exif, quality=95)
    header = read_header(data)
    assert header.orientation == orientation
    stored = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    upright = pil_to_tensor(load_image(io.BytesIO(data)))
    assert torch.equal(orient(stored, header.orientation), upright)  # same decoder, same pixels


# -- the pipeline with the device path --------------------------------------------------------


def _inputs(files: dict[str, Path]) -> list[object]:
    names = ["rgb", "empty", "photo0", "cmyk", "bad_table", "gray", "photo1", "truncated"]
    names += ["exif", "progressive", "missing", "photo2", "gray_jpeg", "text", "photo3", "photo4"]
    return [*(files[n] for n in names), photo(seed=3), pil_to_tensor(halves())]


def test_device_path_gives_the_cpu_paths_outcomes_in_order(
    served: Served, files: dict[str, Path], stand_in: None
) -> None:
    common = {"checkpoint_path": served[1]["zip"], "device": "cpu", "batch_size": 5}
    cpu = Classifier("resnet18_ssl", decode="cpu", workers=0, **common)
    gpu = Classifier("resnet18_ssl", decode="gpu", workers=2, **common)
    assert (cpu.decode, gpu.decode) == ("cpu", "gpu")
    inputs = _inputs(files)
    want = list(cpu.stream_embeddings(inputs))
    got = list(gpu.stream_embeddings(inputs))
    assert [o.index for o in got] == list(range(len(inputs)))
    assert [o.error for o in got] == [o.error for o in want]  # the same errors, word for word
    assert sum(o.error is not None for o in got) == 5  # empty, bad table, truncated, missing, text
    for a, b in zip(got, want, strict=True):
        if a.value is not None and b.value is not None:
            # Only the resize arithmetic differs (float here, uint8 in the workers).
            assert torch.cosine_similarity(a.value, b.value, dim=0) > 0.9995
    assert gpu.decoder is not None
    # rgb, photo0-4, exif: decoded on the device; bad_table: refused there, then on the CPU.
    assert (gpu.decoder.stats.device, gpu.decoder.stats.refused) == (7, 1)


def test_a_file_the_device_refuses_is_decoded_on_the_cpu(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvJPEG refuses some files libjpeg-turbo reads: the batch call fails, each file is then
    tried alone, and the one refused is decoded by Pillow (simulated: the device refuses one)."""
    decoder = DeviceDecoder(torch.device("cpu"), GEOMETRY, share=Share(1.0))
    refused = files["photo1"].read_bytes()
    real = decode_jpeg

    def device_decode(data: object, **kwargs: object) -> object:
        batch = data if isinstance(data, list) else [data]
        if any(bytes(d.numpy()) == refused for d in batch):
            msg = "Error while decoding JPEG images: nvjpeg status 6"
            raise RuntimeError(msg)
        return real(data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(devdecode, "decode_jpeg", device_decode)
    names = ["photo0", "photo1", "photo2"]
    loader = make_batch_loader(
        [files[n] for n in names], [[0, 1, 2]], GEOMETRY, workers=0, pin_memory=False,
        decoder=decoder,
    )  # fmt: skip
    (batch,) = list(loader)
    assert batch.indices == [0, 1, 2] and batch.errors == [None, None, None]
    assert batch.images is not None and batch.images.dtype == torch.float32
    expected = GEOMETRY(pil_to_tensor(load_image(files["photo1"]))).float() / 255
    assert torch.equal(batch.images[1], expected)  # the CPU path's crop, exactly
    assert (decoder.stats.device, decoder.stats.refused) == (2, 1)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_chunks_and_shares_keep_every_input_in_order(
    files: dict[str, Path], fraction: float
) -> None:
    decoder = DeviceDecoder(torch.device("cpu"), GEOMETRY, share=Share(fraction))
    items = [files[f"photo{i % 5}"] for i in range(11)] + [files["empty"], files["cmyk"]]
    batches = [range(0, 5), range(5, 6), range(6, 13)]
    loader = make_batch_loader(
        items, batches, GEOMETRY, workers=2, pin_memory=False, decoder=decoder, chunk=2
    )
    got = list(loader)
    assert [b.indices for b in got] == [list(r) for r in batches]  # one batch per batch asked
    assert got[2].errors[-2:] == ["empty file (0 bytes), not an image", None]
    assert [len(b.images) for b in got if b.images is not None] == [5, 1, 6]
    # Every other .jpg at 0.5: photos 1, 3, 5, 7, 9 and empty.jpg (a worker finds it is no JPEG).
    assert decoder.stats.device == {0.0: 0, 0.5: 5, 1.0: 11}[fraction]
    assert decoder.stats.device + decoder.stats.cpu == 12  # the good ones, each counted once


def test_a_fixed_share_sends_exactly_that_fraction_evenly() -> None:
    share = Share(0.25)
    assert [share.take() for _ in range(8)] == [False, False, False, True] * 2
    assert all(Share(1.0).take() for _ in range(5)) and not any(Share(0).take() for _ in range(5))


def test_the_adaptive_share_moves_towards_the_side_that_waits_less() -> None:
    share = AdaptiveShare(0.5, step=0.1)
    share.observe(loader_wait=0.02, model_wait=0.03, period=0.1)  # workers behind: device more
    assert share.fraction == pytest.approx(0.6)
    share.observe(loader_wait=0.0, model_wait=0.03, period=0.1)  # device decoding behind
    share.observe(loader_wait=0.0, model_wait=0.03, period=0.1)
    assert share.fraction == pytest.approx(0.4)
    share.observe(loader_wait=0.001, model_wait=0.001, period=0.1)  # the model is the limit
    assert share.fraction == pytest.approx(0.4)
    for _ in range(20):
        share.observe(loader_wait=1.0, model_wait=0.0, period=0.1)
    assert share.fraction == 1.0


def test_auto_is_the_cpu_on_a_cpu_and_a_share_beside_the_workers_on_a_device(
    served: Served, stand_in: None, files: dict[str, Path]
) -> None:
    common = {"checkpoint_path": served[1]["zip"], "workers": 1, "batch_size": 4}
    hybrid = Classifier("resnet18_ssl", device="cpu", **common)  # decode="auto"
    assert hybrid.decode == "hybrid"
    inputs = [files[f"photo{i % 5}"] for i in range(12)]
    outcomes = list(hybrid.stream_predictions(inputs, top_k=1))
    assert [o.index for o in outcomes] == list(range(12)) and all(o.error is None for o in outcomes)
    assert hybrid.decoder is not None and len(hybrid.decoder.stats.shares) == 3


def test_without_the_stand_in_auto_is_cpu_and_gpu_is_a_usage_error(served: Served) -> None:
    clf = Classifier("resnet18_ssl", checkpoint_path=served[1]["zip"], device="cpu")
    assert (clf.decode, clf.decoder) == ("cpu", None)
    with pytest.raises(InvalidInputError, match=r"decode='gpu' decodes JPEGs with CUDA"):
        Classifier("resnet18_ssl", device="cpu", decode="gpu")
    with pytest.raises(InvalidInputError, match=r"Unknown decode 'nvjpeg': use one of auto, cpu"):
        Classifier("resnet18_ssl", device="cpu", decode="nvjpeg")
    with pytest.raises(InvalidInputError, match=r"decode='gpu' decodes JPEGs with CUDA"):
        evaluate("resnet18_ssl", "/no/such/folder", device="cpu", decode="gpu")


@pytest.mark.parametrize("command", ["classify", "embed", "evaluate"])
def test_decode_gpu_without_cuda_exits_2_naming_cuda(
    command: str, served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, files = served
    before = dict(server.requests)
    common = ["--checkpoint", f"{server.url}/{files['zip'].name}", "--device", "cpu"]
    if command == "evaluate":
        argv = ["evaluate", "resnet18_ssl", "--data", str(tmp_path), *common]
    else:
        argv = [command, "--model", "resnet18_ssl", *common, str(tmp_path / "x.jpg")]
    assert main([*argv, "--decode", "gpu"]) == 2
    err = capsys.readouterr().err
    assert f"wsl-images {command}: error: decode='gpu' decodes JPEGs with CUDA" in err
    assert dict(server.requests) == before  # refused before the weights were fetched


def test_evaluate_reports_its_decoder(served: Served, tmp_path: Path, stand_in: None) -> None:
    wnids = imagenet_wnids()
    for c in range(4):
        (tmp_path / "val" / wnids[c]).mkdir(parents=True)
        for i in range(3):
            photo((80, 60), seed=10 * c + i).save(tmp_path / "val" / wnids[c] / f"{i}.jpg")
    (tmp_path / "val" / wnids[0] / "gray.png").write_bytes(_png(photo().convert("L")))
    common = {"checkpoint_path": served[1]["zip"], "device": "cpu", "workers": 1}
    default = evaluate("resnet18_ssl", tmp_path / "val", progress=False, **common)
    assert (default.decode, default.device_decoded) == ("cpu", 0)
    assert "decoding: Pillow, full decode, in the CPU workers" in default.summary()
    gpu = evaluate("resnet18_ssl", tmp_path / "val", progress=False, decode="gpu", **common)
    assert (gpu.decode, gpu.device_decoded, gpu.count) == ("gpu", 12, 13)
    assert "decoding: gpu: nvJPEG on cpu for 12 of 13 images, Pillow" in gpu.summary()
    assert gpu.as_dict()["decode"] == "gpu" and gpu.as_dict()["device_decoded"] == 12
    assert abs(gpu.top1 - default.top1) <= 100 / 13 + 1e-9  # at most one image moved
    out = tmp_path / "r.json"
    argv = ["evaluate", "resnet18_ssl", "--data", str(tmp_path / "val"), "--device", "cpu"]
    argv += ["--checkpoint", str(served[1]["zip"]), "--decode", "auto", "--no-progress"]
    assert main([*argv, "-o", str(out)]) == 0
    assert json.loads(out.read_text())["decode"] == "hybrid"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_tar_members_go_to_the_device_from_the_archive(
    served: Served, tmp_path: Path, stand_in: None
) -> None:
    members = [(f"{i}.jpg", _jpeg(photo(seed=i), quality=90)) for i in range(4)]
    members.insert(2, ("cut.jpg", members[0][1][:200]))
    tar = write_tar(tmp_path / "shard.tar", members)
    common = ["--model", "resnet18_ssl", "--checkpoint", str(served[1]["zip"]), "--device", "cpu"]
    argv = ["classify", *common, "--format", "jsonl", "--no-progress", "--workers", "1", str(tar)]
    out = {}
    for decode in ("cpu", "gpu"):
        assert main([*argv, "--decode", decode, "-o", str(tmp_path / f"{decode}.jsonl")]) == 1
        lines = (tmp_path / f"{decode}.jsonl").read_text().splitlines()
        out[decode] = [json.loads(line) for line in lines]
    assert [r["path"] for r in out["gpu"]] == [f"{tar}/{name}" for name, _ in members]
    assert [r.get("error") for r in out["gpu"]] == [r.get("error") for r in out["cpu"]]
    top = [[r["predictions"][0]["index"] for r in out[d] if "error" not in r] for d in out]
    assert top[0] == top[1]


# -- inputs listed as the run goes -------------------------------------------------------------


def test_the_first_results_come_before_the_listing_ends(
    served: Served, files: dict[str, Path]
) -> None:
    listed: list[int] = []

    def listing() -> Iterator[Path]:
        for i in range(40):
            listed.append(i)
            yield files[f"photo{i % 5}"]

    clf = Classifier(
        "resnet18_ssl", checkpoint_path=served[1]["zip"], device="cpu", workers=0, batch_size=4
    )
    inputs = Growing(listing())
    outcomes = clf.stream_predictions(inputs, top_k=1)
    first = next(outcomes)
    assert first.index == 0 and len(listed) < 12  # a batch or two listed, not all 40
    rest = list(outcomes)
    assert [o.index for o in rest] == list(range(1, 40)) and inputs.complete


def test_classify_writes_lines_while_stdin_still_has_paths(
    served: Served, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[int] = []
    seen_at_first_line: list[int] = []

    class Stdin(io.StringIO):
        def __iter__(self) -> Iterator[str]:
            for i in range(30):
                read.append(i)
                yield f"{files[f'photo{i % 5}']}\n"

    class Stdout(io.StringIO):
        def write(self, text: str) -> int:
            if not seen_at_first_line:
                seen_at_first_line.append(len(read))
            return super().write(text)

    monkeypatch.setattr(sys, "stdin", Stdin())
    monkeypatch.setattr(sys, "stdout", out := Stdout())
    argv = ["classify", "--model", "resnet18_ssl", "--checkpoint", str(served[1]["zip"])]
    argv += ["--device", "cpu", "--workers", "0", "--batch-size", "2", "--format", "jsonl", "-"]
    assert main(argv) == 0
    assert seen_at_first_line[0] < 10 and len(read) == 30
    assert len(out.getvalue().splitlines()) == 30


# -- the spawn start method --------------------------------------------------------------------

SPAWNED = """
import multiprocessing, sys, torch
from wsl_images import Classifier
from wsl_images.inference import _devdecode

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn", force=True)
    device, checkpoint, *paths = sys.argv[1:]
    _devdecode.CPU_STANDS_IN = device == "cpu"
    clf = Classifier("resnet18_ssl", checkpoint_path=checkpoint, device=device, decode="gpu",
                     workers=2, batch_size=3, progress=False)
    outcomes = list(clf.stream_predictions(paths, top_k=1))
    ok = [o.error is None for o in outcomes]
    print([o.index for o in outcomes], ok, clf.decoder.stats.device)
"""


def spawned_run(device: str, checkpoint: Path, paths: list[Path]) -> str:
    """Classify ``paths`` in a fresh process whose DataLoader workers are spawned."""
    proc = subprocess.run(
        [sys.executable, "-c", SPAWNED, device, str(checkpoint), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_spawned_workers_read_bytes_for_the_device(served: Served, files: dict[str, Path]) -> None:
    paths = [files["photo0"], files["empty"], files["cmyk"], files["photo1"], files["exif"]]
    got = spawned_run("cpu", served[1]["zip"], paths)
    assert got == "[0, 1, 2, 3, 4] [True, False, True, True, True] 3"
