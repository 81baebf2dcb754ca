"""The backbone compiled by Inductor inside the pipeline's CUDA graph (fusion.compiled): the option's rules
on any machine, the cache folder, and on the GPU the compiled pipeline's poses against the uncompiled
one's on real frames, and what ``compile='auto'`` chooses."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import helpers
from posefuse.fusion import compiled
from posefuse.fusion.accuracy import match
from posefuse.fusion.pipeline import PosePipeline
from posefuse.kernels._common import KernelInputError
from posefuse.runners.cli import main
from posefuse.runners.config import ConfigError, RunConfig


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty posefuse cache folder of the test's own (Inductor's entries included)."""
    monkeypatch.setenv("POSEFUSE_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    return tmp_path


def test_option_rules_and_the_cpu(capsys):
    with pytest.raises(ConfigError, match=r"^compile: expected one of"):
        RunConfig(compile="fast").check()
    c = RunConfig(device="cpu").validated()
    assert c.compile == "off" and "on a GPU" in c.chosen["compile"]
    assert RunConfig(device="cpu", compile="default").validated().compile == "default"  # asked: the pipeline says
    pipe = PosePipeline(device="cpu", compile="default")
    assert pipe.compile == "off"  # what runs: the CPU runs the backbone eagerly
    with pytest.raises(KernelInputError, match=r"^compile: expected one of"):
        PosePipeline(device="cpu", compile="fast")
    with pytest.raises(SystemExit) as e:
        main(["run", "--compile", "fast"])
    assert e.value.code == 2 and "--compile" in capsys.readouterr().err


def test_auto_compiles_live_runs_without_an_end_and_long_nvdec_jobs():
    """compile 'auto' on a GPU (the rule alone: no GPU here): a live run without an end compiles; a job of
    local videos read with NVDEC compiles from COMPILE_JOB_FRAMES frames on, and says how many; from
    COMPILE_SAVED_JOB_FRAMES it loads a saved compiled backbone but compiles none ('saved'); a shorter one,
    an OpenCV-read one (bound by its decode) and a folder do neither."""
    from posefuse.fusion.compiled import COMPILE_MODES
    from posefuse.runners import config
    from posefuse.runners.config import COMPILE_JOB_FRAMES, COMPILE_SAVED_JOB_FRAMES, _auto_compile

    assert config.COMPILE_MODES == COMPILE_MODES  # written twice: the config module does not import torch
    clip = helpers.data_path("one-by-one-person-detection.mp4")  # 1,394 frames
    n = -(-COMPILE_JOB_FRAMES // 1394)
    mode, why = _auto_compile(RunConfig(sources=[clip], repeat=n, decoder="nvdec"), gpu_run=True)
    assert mode == "default" and f"a job of {n * 1394:,} frames read with NVDEC" in why, why
    for k in (n - 1, -(-COMPILE_SAVED_JOB_FRAMES // 1394)):
        mode, why = _auto_compile(RunConfig(sources=[clip], repeat=k, decoder="nvdec"), gpu_run=True)
        assert mode == "saved" and f"a job of {k * 1394:,} frames" in why and "not a compile" in why, why
    k = COMPILE_SAVED_JOB_FRAMES // 1394
    for cfg in (RunConfig(sources=[clip], repeat=k, decoder="nvdec"), RunConfig(sources=[clip], repeat=n,
                decoder="cpu"), RunConfig(sources=[os.path.dirname(clip)], decoder="nvdec")):
        mode, why = _auto_compile(cfg, gpu_run=True)
        assert mode == "off" and "more than this job would win back" in why, why
    assert _auto_compile(RunConfig(sources=[clip], mode="live"), gpu_run=True)[0] == "default"
    assert _auto_compile(RunConfig(sources=[clip], repeat=n, decoder="nvdec"), gpu_run=False)[0] == "off"


def test_cache_folder(cache):
    assert compiled.use_cache_dir() == cache / "inductor" and (cache / "inductor").is_dir()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_gpu_compiled_equals_uncompiled_and_auto_compiles_long_runs(cache, backend, clip_frames):
    """fp16, batch 16 of real frames, the chain captured: every detection matched at IoU >= 0.98, no extra,
    keypoints within 1 px, scores within 0.01 (Inductor's fused kernels round fp16 otherwise), Inductor's
    entries in the posefuse cache; a later 'default' start and a 'saved' one load the artifact the first
    saved. ``compile='auto'`` compiles a live run without an end, not a short job."""
    assert RunConfig(device="cuda").validated().compile == "off"
    live = RunConfig(device="cuda", mode="live").validated()
    assert live.compile == "default" and "without an end" in live.chosen["compile"]
    frames = [torch.from_numpy(f).cuda() for f in clip_frames[140:156]]
    eager = PosePipeline(device="cuda", backend=backend, batch_sizes=(16,))
    comp = PosePipeline(device="cuda", backend=backend, batch_sizes=(16,), compile="default")
    assert comp.compile == "default" and comp.cuda_graph
    n = 0
    for _ in range(2):  # the capture, then a replay
        for ours, theirs in zip(comp(frames), eager(frames)):
            assert len(ours) == len(theirs)
            pairs = match(ours.boxes, theirs.boxes, 0.98)
            assert len(pairs) == len(ours)
            for i, j in pairs:
                assert np.abs(ours.keypoints[i, :, :2] - theirs.keypoints[j, :, :2]).max() <= 1.0
                assert abs(float(ours.scores[i]) - float(theirs.scores[j])) <= 0.01
            n += len(ours)
    assert n >= 10 and comp.graph_errors == []
    assert any((cache / "artifacts").glob("*.bin"))  # the compiled backbone, for the next start to load
    assert set(comp.compile_origin.values()) == {"compiled"} and eager.compile_origin == {}
    again = PosePipeline(device="cuda", backend=backend, batch_sizes=(16,), compile="default")
    again(frames)
    assert set(again.compile_origin.values()) == {"loaded"}  # a later start loads what this one saved
    saved = PosePipeline(device="cuda", backend=backend, batch_sizes=(16,), compile="saved")
    for ours, theirs in zip(saved(frames), comp(frames)):
        assert len(ours) == len(theirs)
    assert saved.compile == "saved" and set(saved.compile_origin.values()) == {"loaded"}


@pytest.mark.gpu
def test_a_start_that_loads_its_compiled_backbone_starts_no_compile_workers(cache):
    """Two fresh processes build a compiled pipeline: the first compiles (Inductor's pool of compile worker
    processes starts), the second loads the saved artifact and starts none (their start and exit cost a
    warm start 1.6 s)."""
    code = ("import psutil\n"
            "from posefuse.fusion.pipeline import PosePipeline\n"
            "pipe = PosePipeline(device='cuda', batch_sizes=(1,), compile='default')\n"
            "pipe.warmup((432, 768), 1)\n"
            "print(sorted(set(pipe.compile_origin.values())), len(psutil.Process().children(recursive=True)))\n")
    env = {**os.environ, "POSEFUSE_CACHE": str(cache)}
    got = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        got.append(r.stdout.strip().splitlines()[-1])
    assert got[0].startswith("['compiled']") and int(got[0].split()[-1]) >= 1, got
    assert got[1] == "['loaded'] 0", got


def test_a_compiled_backbone_is_saved_then_loaded_and_equals_the_eager_one(cache):
    """On the CPU (Inductor's C++ backend): the first CompiledBackbone of a model traces, compiles and saves
    its artifact, one for every batch size of the canvas; a second one of the same model loads it; both give
    the eager outputs. Other weights, or the same weights in another memory layout, are another artifact."""
    from posefuse.fusion.backbone import load_backbone

    bb = load_backbone().eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        ref = bb(x)
        first = compiled.compile_backbone(bb, "default")
        got = first(x)
        assert first.origin == {(3, 64, 96): "compiled"}
        x3 = torch.randn(3, 3, 64, 96)
        assert torch.allclose(first(x3), bb(x3), atol=1e-3, rtol=1e-3)  # another batch size, the same artifact
        assert len(list((cache / "artifacts").glob("*.bin"))) == 1
        second = compiled.compile_backbone(bb, "default")
        again = second(x)
        assert second.origin == {(3, 64, 96): "loaded"}
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-3, rtol=1e-3)
    assert torch.allclose(again, ref, atol=1e-3, rtol=1e-3)
    with torch.no_grad():
        bb.layers[0].conv.weight.mul_(0.5)
    with torch.inference_mode():
        other = compiled.compile_backbone(bb, "default")
        changed = other(x)
        assert other.origin == {(3, 64, 96): "compiled"}
        assert torch.allclose(changed, bb(x), atol=1e-3, rtol=1e-3)
    assert len(list((cache / "artifacts").glob("*.bin"))) == 2
    bb = bb.to(memory_format=torch.channels_last)  # as the pipeline holds it: 1x1 weights' last stride > 1
    with torch.inference_mode():
        laid = compiled.compile_backbone(bb, "default")
        assert torch.allclose(laid(x), changed, atol=1e-3, rtol=1e-3)
        assert laid.origin == {(3, 64, 96): "compiled"}  # the weights' layout is part of the artifact
    assert len(list((cache / "artifacts").glob("*.bin"))) == 3
    with pytest.raises(ValueError, match=r"^mode: expected one of"):
        compiled.compile_backbone(bb, "off")


def test_saved_loads_what_default_saved_and_compiles_nothing(cache):
    """'saved' on the CPU: with no artifact saved it runs the eager backbone itself (origin 'not saved',
    nothing written); after a 'default' start saved the canvas's artifact, it loads that one ('loaded'),
    equal to the eager backbone at every batch size; a canvas not saved stays eager beside it."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 1),
                              torch.nn.Flatten(2)).eval()
    x, other = torch.randn(2, 3, 16, 24), torch.randn(1, 3, 32, 24)
    with torch.inference_mode():
        cold = compiled.compile_backbone(net, "saved")
        assert torch.equal(cold(x), net(x)) and cold.origin == {(3, 16, 24): "not saved"}
        assert not (cache / "artifacts").exists()
        compiled.compile_backbone(net, "default")(x)  # a start before: compiles and saves
        warm = compiled.compile_backbone(net, "saved")
        for b in (1, 3):
            y = torch.randn(b, 3, 16, 24)
            assert torch.allclose(warm(y), net(y), atol=1e-4, rtol=1e-4)
        assert torch.equal(warm(other), net(other))
        assert warm.origin == {(3, 16, 24): "loaded", (3, 32, 24): "not saved"}
    assert len(list((cache / "artifacts").glob("*.bin"))) == 1


def test_max_autotune_compiles_and_loads(cache):
    """'max-autotune' hands Inductor its config (on the CPU, a small convolutional model): compiled, saved,
    loaded by a second CompiledBackbone, every batch size equal to the eager model."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 1),
                              torch.nn.Flatten(2)).eval()
    with torch.inference_mode():
        for origin in ("compiled", "loaded"):
            comp = compiled.compile_backbone(net, "max-autotune")
            for b in (1, 3):
                x = torch.randn(b, 3, 16, 24)
                assert torch.allclose(comp(x), net(x), atol=1e-4, rtol=1e-4)
            assert comp.origin == {(3, 16, 24): origin}


def test_clip_frames_fixture_has_people(clip_frames):
    """The frames the GPU test compares hold a person (the trained model detects them on the CPU too)."""
    got = PosePipeline(device="cpu")(clip_frames[140:142])
    assert sum(len(r) for r in got) >= 1


def test_the_report_says_what_ran_and_why(tmp_path):
    """``--compile`` asked on the CPU: the report says the backbone ran uncompiled; left to auto, its
    ``chosen`` says why it was not compiled."""
    import json

    for args, chosen in ((["--compile", "default"], False), ([], True)):
        out = tmp_path / "report.json"
        assert main(["run", "--device", "cpu", "--max-frames", "2", "--imgsz", "320", "--no-progress",
                     "--out", str(out), *args]) == 0
        rep = json.loads(out.read_text())
        assert rep["compile"] == "off"
        assert ("compile" in rep["chosen"]) == chosen, rep["chosen"]
