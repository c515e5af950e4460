"""The onnxruntime engine: the same results as the torch engine (bad inputs included), its graph
exported once per checkpoint and kept in the cache, refused when changed, its options checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from imagegen import photo, write_bad
from server import FileServer

from wsl_images import Classifier, clear_cache, download, scan_cache, verify_cache
from wsl_images.cache import _records as records
from wsl_images.errors import (
    ExportError,
    ImageDecodeError,
    InvalidInputError,
    MissingDependencyError,
    WslImagesError,
)
from wsl_images.inference import _graph, _optimised, batch_size_for
from wsl_images.inference._engines import OnnxRuntimeEngine, check_engine, session_options
from wsl_images.inference._onnxwire import without_node_names

ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]
MODEL = "resnet18_ssl"


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by this module's tests, so the graph is exported once for them."""
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Photo-sized JPEGs, then every kind of bad input, then one more good image."""
    folder = tmp_path_factory.mktemp("engine-images")
    good = []
    for i in range(5):
        good.append(folder / f"img{i}.jpg")
        photo(size=(500, 375), seed=i).save(good[-1], quality=90)
    bad = write_bad(folder / "zbad")
    bad.pop("bomb", None)  # slow to decode, and it fails the same for both engines
    last = folder / "zlast.jpg"
    photo(size=(375, 500), seed=9).save(last, quality=90)
    return [*good, *sorted(bad.values()), folder / "missing.jpg", last]


@pytest.fixture(scope="module")
def engines(served: Served, graphs: Path) -> dict[str, Classifier]:
    kwargs = {"checkpoint_path": served[1]["zip"], "batch_size": 3, "workers": 0}
    return {
        engine: Classifier(MODEL, **kwargs, progress=False, cache_dir=graphs, engine=engine)
        for engine in ("torch", "onnxruntime")
    }


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every graph exported (its path), counted where the engine calls the exporter."""
    done: list[Path] = []
    real = _graph.export_onnx

    def counted(module: torch.nn.Module, path: Path, **kwargs: object) -> float:
        done.append(path)
        return real(module, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_graph, "export_onnx", counted)
    return done


def _good(images: list[Path]) -> list[Path]:
    return [p for p in images if p.suffix == ".jpg" and p.exists() and p.stat().st_size > 5000]


def test_same_labels_probabilities_and_features(
    engines: dict[str, Classifier], images: list[Path]
) -> None:
    good = _good(images)
    assert len(good) == 6
    torch_preds, ort_preds = (engines[e].predict(good, top_k=5) for e in ("torch", "onnxruntime"))
    for a, b in zip(torch_preds, ort_preds, strict=True):
        assert a.indices == b.indices and a.labels == b.labels
        assert b.probabilities == pytest.approx(a.probabilities, abs=1e-3)
    feats = {e: engines[e].embed(good) for e in engines}
    assert feats["onnxruntime"].dtype == torch.float32 and feats["onnxruntime"].shape == (6, 512)
    cosine = torch.nn.functional.cosine_similarity(feats["torch"], feats["onnxruntime"])
    assert float(cosine.min()) >= 0.9999


def test_bad_inputs_give_the_same_outcomes_in_the_same_order(
    engines: dict[str, Classifier], images: list[Path]
) -> None:
    outcomes = {
        e: [(o.index, o.error is None) for o in clf.stream_predictions(images, top_k=3)]
        for e, clf in engines.items()
    }
    assert outcomes["onnxruntime"] == outcomes["torch"]
    errors = {
        e: [o.error for o in clf.stream_embeddings(images) if o.error] for e, clf in engines.items()
    }
    assert errors["onnxruntime"] == errors["torch"] and len(errors["torch"]) >= 4
    messages = []
    for clf in engines.values():
        with pytest.raises(ImageDecodeError) as caught:
            clf.predict(images)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


def test_the_graph_is_exported_once_and_a_changed_byte_is_never_loaded(
    served: Served, images: list[Path], exports: list[Path], isolated_cache: Path
) -> None:
    kwargs = {"checkpoint_path": served[1]["zip"], "workers": 0, "progress": False}
    first = Classifier(MODEL, **kwargs, engine="onnxruntime")
    assert len(exports) == 1
    Classifier(MODEL, **kwargs, engine="onnxruntime")
    assert len(exports) == 1  # found in the cache: nothing built
    (folder,) = (isolated_cache / ".wsl-images" / "derived").glob("*~onnx-*")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "about.json",
        "features.onnx",
        "features.onnx.data",
    ]
    data = folder / "features.onnx.data"
    with open(data, "r+b") as f:  # one byte of one weight, changed in place
        f.seek(data.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    again = Classifier(MODEL, **kwargs, engine="onnxruntime")
    assert len(exports) == 2  # rebuilt from the checkpoint, not loaded
    good = _good(images)[:2]
    assert torch.equal(again.embed(good), first.embed(good))


def test_a_graph_that_fails_its_check_is_not_kept(
    served: Served, monkeypatch: pytest.MonkeyPatch, isolated_cache: Path
) -> None:
    def mismatch(module: torch.nn.Module, path: Path, **kwargs: object) -> float:
        path.write_bytes(b"a graph that does not match")
        msg = "The onnx export on a batch of 1 does not match PyTorch"
        raise ExportError(msg)

    monkeypatch.setattr(_graph, "export_onnx", mismatch)
    with pytest.raises(ExportError, match="does not match PyTorch"):
        Classifier(MODEL, checkpoint_path=served[1]["zip"], workers=0, engine="onnxruntime")
    assert list((isolated_cache / ".wsl-images" / "derived").iterdir()) == []


def test_a_cached_checkpoints_graph_is_verified_and_cleared_with_it(served: Served) -> None:
    server, files = served
    url = f"{server.url}/{files['zip'].name}"
    Classifier(MODEL, checkpoint_path=url, workers=0, progress=False, engine="onnxruntime")
    (entry,) = scan_cache()
    graph, saved = sorted(entry.derived, key=lambda d: d.key)  # the graph, onnxruntime's own
    assert graph.folder and graph.verified and graph.key.startswith(f"onnx-{MODEL}-")
    assert saved.folder and saved.verified and saved.key.startswith(f"ort-{MODEL}-")
    assert graph.path.parent.name == "derived" and graph.size > 40_000_000
    assert verify_cache() == []
    removed = clear_cache([entry.path.name])
    assert {graph.path, saved.path} <= set(removed)
    assert not (graph.path.exists() or saved.path.exists())
    assert download(url, progress=False).is_file()  # the cache works as before


def _derived(cache: Path, kind: str) -> list[Path]:
    return sorted((cache / ".wsl-images" / "derived").glob(f"*~{kind}-*"))


def test_onnxruntimes_optimised_graph_is_saved_once_per_cpu_kind_and_checked(
    served: Served, images: list[Path], isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first session saves what onnxruntime makes of the graph for this CPU; later ones
    load it as it is, with the same features as a session that optimises the graph itself. A
    CPU that onnxruntime treats differently gets its own; a changed byte is never loaded."""
    kwargs = {"checkpoint_path": served[1]["zip"], "workers": 0, "progress": False}
    first = Classifier(MODEL, **kwargs, engine="onnxruntime")
    (saved,) = _derived(isolated_cache, "ort")
    about = json.loads((saved / "about.json").read_text())
    assert about["max_abs_diff"] <= 1e-4 and len(about["cpu_fingerprint"]) == 16
    made = {p.name: p.stat().st_mtime_ns for p in saved.iterdir()}
    assert "features.ort.onnx.data" in made
    later = Classifier(MODEL, **kwargs, engine="onnxruntime")
    engine = later._engine
    assert isinstance(engine, OnnxRuntimeEngine) and engine.optimised
    level = engine.session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # loaded as saved
    assert {p.name: p.stat().st_mtime_ns for p in saved.iterdir()} == made  # nothing remade
    (graph,) = _derived(isolated_cache, "onnx")
    live = OnnxRuntimeEngine(graph / _graph.GRAPH, torch.device("cpu"), torch.get_num_threads())
    assert not live.optimised
    batch = torch.rand(3, 3, 224, 224)
    assert torch.equal(engine.features(batch), live.features(batch))
    good = _good(images)[:3]
    expected = first.embed(good)
    assert torch.equal(later.embed(good), expected)
    # Another kind of CPU sharing the cache: its own saved graph, this one untouched.
    monkeypatch.setattr(_optimised, "_FINGERPRINT", ["0123456789abcdef"])
    Classifier(MODEL, **kwargs, engine="onnxruntime")
    assert len(_derived(isolated_cache, "ort")) == 2 and saved in _derived(isolated_cache, "ort")
    assert {p.name: p.stat().st_mtime_ns for p in saved.iterdir()} == made
    monkeypatch.undo()
    # A changed byte: refused, made again from the graph (which is not exported again). (The
    # sessions above map the file: changed in place, not replaced as the cache does, their
    # weights change too, so they are not asked again.)
    data = saved / "features.ort.onnx.data"
    with open(data, "r+b") as f:
        f.seek(data.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    again = Classifier(MODEL, **kwargs, engine="onnxruntime")
    assert again._engine.optimised  # type: ignore[attr-defined]
    assert torch.equal(again.embed(good), expected)


def test_the_cpu_fingerprint_is_taken_in_the_cache_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What onnxruntime makes of a probe graph on this CPU, taken in a scratch folder of the
    cache (nothing written elsewhere, nothing left), once per process."""
    monkeypatch.setattr(_optimised, "_FINGERPRINT", [])
    first = _optimised.cpu_fingerprint(tmp_path / "cache")
    assert len(first) == 16 and [first] == _optimised._FINGERPRINT
    monkeypatch.setattr(_optimised, "_FINGERPRINT", [])
    assert _optimised.cpu_fingerprint(tmp_path / "other") == first  # the CPU's, not the folder's
    for folder in (tmp_path / "cache", tmp_path / "other"):
        assert sorted(p.name for p in folder.rglob("*")) == [".wsl-images", "derived"]


def test_the_cpu_fingerprint_leaves_out_the_names_onnxruntime_gives_its_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime names the nodes it adds in an order that varies between sessions, so the
    fingerprint reads what it writes without node names (from the wire format, as onnx parses
    it) and every session on this CPU gives one fingerprint, hence one saved graph."""
    onnx = pytest.importorskip("onnx")
    options = session_options(1)
    options.optimized_model_filepath = str(tmp_path / "probe.onnx")
    ort.InferenceSession(_optimised.probe_graph(), options, providers=["CPUExecutionProvider"])
    written = onnx.load_from_string((tmp_path / "probe.onnx").read_bytes())
    unnamed = onnx.load_from_string((tmp_path / "probe.onnx").read_bytes())
    for node in unnamed.graph.node:
        node.ClearField("name")
    stripped = without_node_names((tmp_path / "probe.onnx").read_bytes())
    assert onnx.load_from_string(stripped) == unnamed  # the rest as written

    renamed = onnx.load_from_string(written.SerializeToString())
    for i, node in enumerate(reversed(renamed.graph.node)):
        node.name = f"ReorderOutput_token_{i}"
    original = without_node_names(written.SerializeToString())
    assert without_node_names(renamed.SerializeToString()) == original
    other = onnx.load_from_string(written.SerializeToString())
    other.graph.initializer[0].dims[0] += 16  # another block: another graph
    assert without_node_names(other.SerializeToString()) != original
    other = onnx.load_from_string(written.SerializeToString())
    other.graph.node[0].op_type += "x"
    assert without_node_names(other.SerializeToString()) != original

    taken = set()
    for _ in range(8):
        monkeypatch.setattr(_optimised, "_FINGERPRINT", [])
        taken.add(_optimised.cpu_fingerprint(tmp_path / "cache"))
    assert len(taken) == 1


@pytest.mark.parametrize(
    "data", [b"\x0a\x05ab", b"\x80", b"\x0b", b"\x09\x01", b"\x08" + b"\xff" * 11]
)
def test_bytes_that_are_not_protobuf_are_refused(data: bytes) -> None:
    """Cut short, an obsolete wire type, a varint over 64 bits: ValueError (the engine then
    optimises at each start), never an endless loop or a wrong reading."""
    with pytest.raises(ValueError):
        without_node_names(data)


def test_without_a_saved_optimised_graph_the_engine_optimises_at_each_start(
    served: Served, images: list[Path], isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved graph that does not give the live session's features is not kept; a cache that
    cannot hold one (read-only) is not an error. Either way the session optimises the graph."""
    kwargs = {"checkpoint_path": served[1]["zip"], "workers": 0, "progress": False}
    reference = Classifier(MODEL, **kwargs, engine="torch").embed(_good(images)[:2])
    tolerance = _optimised._TOLERANCE
    monkeypatch.setattr(_optimised, "_TOLERANCE", -1.0)  # any difference, even none, is too big
    clf = Classifier(MODEL, **kwargs, engine="onnxruntime")
    assert not clf._engine.optimised  # type: ignore[attr-defined]
    assert _derived(isolated_cache, "ort") == [] and len(_derived(isolated_cache, "onnx")) == 1
    monkeypatch.setattr(_optimised, "_TOLERANCE", tolerance)
    keep = _optimised.cache.keep_derived_files

    def read_only(source: Path, key: str, make: Callable[[Path], None]) -> Path:
        if not key.startswith("ort-"):
            return keep(source, key, make)
        raise WslImagesError(f"Cannot keep {key} in the cache folder (read-only file system).")

    monkeypatch.setattr(_optimised.cache, "keep_derived_files", read_only)
    clf = Classifier(MODEL, **kwargs, engine="onnxruntime")
    assert not clf._engine.optimised  # type: ignore[attr-defined]
    cosine = torch.nn.functional.cosine_similarity(clf.embed(_good(images)[:2]), reference)
    assert float(cosine.min()) >= 0.9999


def test_engine_threads_are_the_models(
    engines: dict[str, Classifier], served: Served, graphs: Path
) -> None:
    session = engines["onnxruntime"]._engine.session  # type: ignore[attr-defined]
    assert session.get_session_options().intra_op_num_threads == torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clf = Classifier(
            MODEL, checkpoint_path=served[1]["zip"], cache_dir=graphs, engine="onnxruntime"
        )
    finally:
        torch.set_num_threads(before)
    options = clf._engine.session.get_session_options()  # type: ignore[attr-defined]
    assert options.intra_op_num_threads == 1


def test_each_engine_has_its_own_cpu_batch(served: Served, graphs: Path) -> None:
    """On a CPU torch runs batches of 8 (its activations stay in the processor's cache) and
    onnxruntime 32 (its rate is flat, fewer calls gain a little); a GPU's follows the model."""
    kwargs = {"checkpoint_path": served[1]["zip"], "cache_dir": graphs, "workers": 0}
    built = {
        engine: Classifier(MODEL, **kwargs, device="cpu", progress=False, engine=engine)
        for engine in ("torch", "onnxruntime")
    }
    assert {engine: clf.batch_size for engine, clf in built.items()} == {
        "torch": 8,
        "onnxruntime": 32,
    }
    gpu = torch.device("cuda")
    assert batch_size_for(gpu, 4.0, engine="onnxruntime") == batch_size_for(gpu, 4.0) == 256


def test_bad_engine_options_are_usage_errors() -> None:
    with pytest.raises(InvalidInputError, match="Unknown engine 'tensorrt': use one of torch"):
        Classifier(MODEL, engine="tensorrt")  # before any download (none is served here)
    with pytest.raises(InvalidInputError, match="computes in float32"):
        Classifier(MODEL, engine="onnxruntime", autocast="bfloat16")
    with pytest.raises(InvalidInputError, match="Install onnxruntime-gpu"):
        check_engine("onnxruntime", torch.device("cuda", 1), None)
    with pytest.raises(InvalidInputError, match="runs on 'cpu' or 'cuda', not on 'mps'"):
        check_engine("onnxruntime", torch.device("mps"), None)


def _cli(argv: list[str]) -> int:
    from wsl_images.cli import main

    return main(argv)


def test_cli_engine_flag(
    served: Served,
    images: list[Path],
    graphs: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WSL_IMAGES_CACHE", str(graphs))
    common = ["--model", MODEL, "--checkpoint", str(served[1]["zip"]), "--no-progress"]
    common += ["--workers", "0", *map(str, images)]
    rows = {}
    for engine in ("torch", "onnxruntime"):
        code = _cli(["classify", "--format", "jsonl", "--engine", engine, *common])
        out = capsys.readouterr().out
        assert code == 1  # some inputs failed, with either engine
        rows[engine] = [json.loads(line) for line in out.splitlines()]  # nothing else printed
    assert [r["path"] for r in rows["onnxruntime"]] == [str(p) for p in images]
    for a, b in zip(rows["torch"], rows["onnxruntime"], strict=True):
        assert a.get("error") == b.get("error")
        if "predictions" in a:
            assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
    with pytest.raises(SystemExit) as usage:  # argparse's choices: exit 2
        _cli(["classify", "--engine", "tensorrt", *common])
    assert usage.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err
    assert _cli(["embed", "--engine", "onnxruntime", "--dtype", "bfloat16", *common]) == 2
    assert "computes in float32" in capsys.readouterr().err


def test_sharded_runs_record_the_engine_and_refuse_another(
    served: Served,
    images: list[Path],
    graphs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WSL_IMAGES_CACHE", str(graphs))
    out = tmp_path / "out"
    checkpoint = served[1]["zip"]
    argv = ["embed", "--model", MODEL, "--checkpoint", str(checkpoint), "--no-progress"]
    argv += ["--workers", "0", "--output-dir", str(out), "--shard-size", "4", *map(str, images)]
    # The local checkpoint's sha256 names its graph and goes into run.json: it is read once.
    monkeypatch.setattr(records, "_hashed", {})
    hashed: list[Path] = []
    real = records.sha256_of
    monkeypatch.setattr(records, "sha256_of", lambda p: hashed.append(Path(p)) or real(p))
    assert _cli([*argv, "--engine", "onnxruntime"]) == 1
    assert hashed.count(checkpoint) == 1
    assert json.loads((out / "run.json").read_text())["checkpoint_sha256"] == real(checkpoint)
    assert json.loads((out / "run.json").read_text())["options"]["engine"] == "onnxruntime"
    rows = np.concatenate([np.load(p) for p in sorted(out.glob("shard-*.npy"))])
    assert rows.shape == (len(_good(images)), 512)
    assert _cli([*argv, "--engine", "onnxruntime"]) == 1  # resumed: nothing to do
    assert "resumed: 3 of 3 shards were complete already" in capsys.readouterr().err
    assert _cli([*argv, "--engine", "torch"]) == 2
    assert "engine 'onnxruntime' there, 'torch' now" in capsys.readouterr().err
    # A run recorded before engines existed was the torch engine's: torch resumes it.
    spec = json.loads((out / "run.json").read_text())
    del spec["options"]["engine"]
    (out / "run.json").write_text(json.dumps(spec))
    assert _cli([*argv, "--engine", "torch"]) == 1
    assert _cli([*argv, "--engine", "onnxruntime"]) == 2
    assert "engine 'torch' there, 'onnxruntime' now" in capsys.readouterr().err


def test_evaluate_with_either_engine(
    served: Served, graphs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same scores; on a CPU each engine at its own default batch (torch 8: its activations
    stay in the CPU's cache; onnxruntime 32: its rate is flat, fewer calls gain a little)."""
    from wsl_images import evaluate
    from wsl_images.evaluation import _evaluate, default_batch_size, imagenet_wnids

    cpu = torch.device("cpu")
    assert default_batch_size(cpu) == default_batch_size(cpu, engine="torch") == 8
    assert default_batch_size(cpu, engine="onnxruntime") == 32
    built: dict[str, int] = {}

    def spy(*args: object, **kwargs: object) -> Classifier:
        clf = Classifier(*args, **kwargs)  # type: ignore[arg-type]
        built[clf.engine] = clf.batch_size
        return clf

    monkeypatch.setattr(_evaluate, "Classifier", spy)

    wnids = imagenet_wnids()
    for c in range(3):
        (tmp_path / wnids[c]).mkdir()
        for k in range(2):
            photo(size=(500, 375), seed=10 * c + k).save(tmp_path / wnids[c] / f"{k}.jpg")
    results = {
        engine: evaluate(
            MODEL,
            tmp_path,
            checkpoint_path=served[1]["zip"],
            workers=0,
            progress=False,
            engine=engine,
        )
        for engine in ("torch", "onnxruntime")
    }
    assert built == {"torch": 8, "onnxruntime": 32}
    t, o = results["torch"], results["onnxruntime"]
    assert (o.engine, t.engine) == ("onnxruntime", "torch")
    assert (o.top1, o.top5, o.count) == (t.top1, t.top5, t.count)
    assert [c.top5 for c in o.per_class] == [c.top5 for c in t.per_class]
    assert "engine onnxruntime" in o.summary()


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_only_the_onnxruntime_engine_imports_onnxruntime(
    engine: str, served: Served, tmp_path: Path
) -> None:
    """The torch engine imports none of the ONNX packages; the onnxruntime engine's first run
    exports (all three), a later run in a new process loads what is kept: onnxruntime alone
    (onnx and onnxscript cost 1.3 s to import)."""
    code = f"""
import json, sys, torch
from wsl_images import Classifier
clf = Classifier({MODEL!r}, checkpoint_path={str(served[1]["zip"])!r}, workers=0,
                 cache_dir={str(tmp_path)!r}, engine={engine!r})
clf.predict([torch.zeros(3, 40, 50, dtype=torch.uint8)], top_k=2)
print(json.dumps([m for m in ("onnxruntime", "onnx", "onnxscript") if m in sys.modules]))
"""

    def loaded() -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
        )
        assert proc.returncode == 0, proc.stderr
        return list(json.loads(proc.stdout.strip().splitlines()[-1]))

    if engine == "torch":
        assert loaded() == []
        return
    assert loaded() == ["onnxruntime", "onnx", "onnxscript"]  # the first run exports
    kept = sorted(p.name for p in (tmp_path / ".wsl-images" / "derived").iterdir())
    assert loaded() == ["onnxruntime"]
    assert sorted(p.name for p in (tmp_path / ".wsl-images" / "derived").iterdir()) == kept


def test_the_shipped_cpu_probe_is_its_recipe() -> None:
    """The CPU fingerprint's probe graph ships with the package (read without importing onnx);
    it is what its recipe builds."""
    onnx = pytest.importorskip("onnx")
    shipped = onnx.load_from_string(_optimised.probe_graph())
    assert shipped == onnx.load_from_string(_optimised.build_probe_graph()), (
        "run: python tools/update_probe.py"
    )


def test_without_the_extra_the_engine_names_it(served: Served, tmp_path: Path) -> None:
    from hub_scenarios import MINIMUM
    from restricted import run_restricted

    code = f"""
import json
from wsl_images import Classifier
from wsl_images.errors import MissingDependencyError
try:
    Classifier({MODEL!r}, checkpoint_path={str(served[1]["zip"])!r}, engine="onnxruntime")
    print(json.dumps("built"))
except MissingDependencyError as exc:
    print(json.dumps(str(exc)))
"""
    proc = run_restricted(code, distributions=MINIMUM)  # torch and torchvision alone
    assert proc.returncode == 0, proc.stderr
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "pip install 'wsl-images[onnxruntime]'" in said and "onnxruntime" in said
    cli = "import sys; from wsl_images.cli import main; sys.exit(main(sys.argv[1:]))"
    photo().save(tmp_path / "x.jpg")
    args = ["classify", "--engine", "onnxruntime", "--checkpoint", str(served[1]["zip"])]
    args.append(str(tmp_path / "x.jpg"))
    proc = run_restricted(cli, distributions=MINIMUM, args=args)
    assert proc.returncode == 1 and "pip install 'wsl-images[onnxruntime]'" in proc.stderr


def test_cli_engines_are_the_inference_engines() -> None:
    from wsl_images.cli._evaluate import ENGINES
    from wsl_images.inference import ENGINES as INFERENCE

    assert ENGINES == INFERENCE


def test_two_ranks_under_torchrun_export_once_and_equal_one(
    served: Served,
    images: list[Path],
    graphs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from launch import torchrun

    monkeypatch.setenv("WSL_IMAGES_CACHE", str(graphs))
    common = ["--model", MODEL, "--checkpoint", str(served[1]["zip"]), "--batch-size", "2"]
    common += ["--workers", "0", "--no-progress", "--engine", "onnxruntime", *map(str, images)]
    assert _cli(["classify", "--format", "jsonl", *common]) == 1
    one = capsys.readouterr().out
    out, cache = tmp_path / "labels.jsonl", tmp_path / "cache"  # a cache without the graph
    argv = ["-m", "wsl_images", "-v", "classify", "--format", "jsonl", "-o", str(out), *common]
    proc = torchrun(argv, env={"WSL_IMAGES_CACHE": str(cache)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("Exporting onnx-resnet18_ssl-") == 1  # local rank 0; rank 1 finds it
    merged, alone = (
        [json.loads(line) for line in text.splitlines()] for text in (out.read_text(), one)
    )
    assert [(r["path"], r.get("error")) for r in merged] == [
        (r["path"], r.get("error")) for r in alone
    ]
    for a, b in zip(merged, alone, strict=True):  # ranks run 1 thread each (torchrun's default)
        for p, q in zip(a.get("predictions", []), b.get("predictions", []), strict=True):
            assert p["index"] == q["index"] and p["probability"] == pytest.approx(q["probability"])


def test_the_extras_install_what_the_engine_and_export_need() -> None:
    import tomllib

    from wsl_images._util import ENGINE_ONNXRUNTIME, EXPORT_ONNXRUNTIME, ONNX_PACKAGES

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = {"onnx": EXPORT_ONNXRUNTIME, "onnxruntime": ENGINE_ONNXRUNTIME}
    for extra, floor in {**floors, "test": ENGINE_ONNXRUNTIME}.items():
        listed = extras["optional-dependencies"][extra]
        needed = dict(r.split(">=") for r in listed if r.split(">=")[0] in ONNX_PACKAGES)
        assert set(needed) == set(ONNX_PACKAGES), extra
        assert needed["onnxruntime"] == ".".join(map(str, floor)), extra


@pytest.mark.parametrize(
    ("version", "engine", "export"),
    [("1.17.3", False, False), ("1.20.0+cu118", False, True), ("1.20.1", False, True),
     ("1.21.0", True, True), ("1.22.0.dev20250101", True, True), ("custom", True, True)],
)  # fmt: skip
def test_an_onnxruntime_too_old_is_named_before_any_work(
    version: str, engine: bool, export: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before 1.18 onnxruntime cannot read the graphs the exporter writes (IR version 10), and
    before 1.21 it cannot reload the optimised graph the engine saves: the engine and export
    say so, naming the version and the command, instead of failing inside onnxruntime."""
    from wsl_images import export_model

    monkeypatch.setattr(ort, "__version__", version)
    cpu = torch.device("cpu")
    found = re.escape(version)
    if engine:
        assert check_engine("onnxruntime", cpu, None) == "onnxruntime"
    else:
        said = rf"onnxruntime >= 1\.21 .*found {found}: pip install -U 'onnxruntime>=1\.21'"
        with pytest.raises(MissingDependencyError, match=said):
            check_engine("onnxruntime", cpu, None)
        with pytest.raises(MissingDependencyError, match=said):
            Classifier(MODEL, workers=0, engine="onnxruntime", cache_dir=tmp_path)
    if not export:
        said = rf"onnxruntime >= 1\.18, found {found}.*pip install -U 'onnxruntime>=1\.18'"
        with pytest.raises(MissingDependencyError, match=said):
            export_model("resnet18_ssl", tmp_path / "m.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []  # refused before any download or file
