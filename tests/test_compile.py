"""The backbone compiled ahead of time by Inductor inside the pipeline's CUDA graph (fusion.compiled): the
option's rules on any machine, the cache folder, a package compiled once then loaded (a CPU package), and on
the GPU the compiled pipeline's poses against the uncompiled one's on real frames, a second pipeline
loading the package, and what ``compile='auto'`` chooses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

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


def test_cache_folder(cache):
    assert compiled.use_cache_dir() == cache / "inductor" and (cache / "inductor").is_dir()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_gpu_compiled_equals_uncompiled_and_auto_compiles_long_runs(cache, backend, clip_frames):
    """fp16, batch 16 of real frames, the chain captured: every detection matched at IoU >= 0.98, no extra,
    keypoints within 1 px, scores within 0.01 (Inductor's fused kernels round fp16 otherwise), Inductor's
    entries in the posefuse cache. ``compile='auto'`` compiles a live run without an end, not a job."""
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
    assert len(comp.compiled_backbone.compiled) == 1  # the package of batch 16, in the posefuse cache
    assert comp.compiled_backbone.compiled[0].parent == cache / "inductor" / "aoti"
    again = PosePipeline(device="cuda", backend=backend, batch_sizes=(16,), compile="default")
    for ours, theirs in zip(again(frames), comp(frames)):  # loaded, not compiled: the same poses
        np.testing.assert_array_equal(ours.boxes, theirs.boxes)
    assert again.compiled_backbone.loaded == comp.compiled_backbone.compiled
    assert again.compiled_backbone.compiled == []


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


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.nn.functional.silu(self.conv(x)).flatten(2)


def test_a_package_is_compiled_once_then_loaded_and_named_by_what_it_depends_on(cache):
    """AOTInductor on the CPU (a C++ package): the first instance exports and compiles the input shape, a
    second one loads the package without compiling, both equal the module; other weights, another shape
    or another mode name another package."""
    torch.manual_seed(0)
    m = _Tiny().eval()
    x = torch.rand(2, 3, 8, 8)
    first = compiled.CompiledBackbone(m, "default")
    with torch.no_grad():
        torch.testing.assert_close(first(x), m(x))
    assert len(first.compiled) == 1 and first.loaded == []
    assert first.compiled[0].parent == cache / "inductor" / "aoti" and first.compiled[0].exists()
    second = compiled.CompiledBackbone(m, "default")
    with torch.no_grad():
        torch.testing.assert_close(second(x), m(x))
    assert second.loaded == first.compiled and second.compiled == []
    name = first.fingerprint(x)
    assert compiled.CompiledBackbone(m, "max-autotune").fingerprint(x) != name
    assert first.fingerprint(torch.rand(1, 3, 8, 8)) != name
    other = _Tiny().eval()
    assert compiled.CompiledBackbone(other, "default").fingerprint(x) != name
