"""The tracker reference (kernels/track) against Ultralytics 8.4.190's BYTETracker with bytetrack.yaml, fed
the same detections: real detections of the sample clips (the CPU pipeline) and random sequences with
births, deaths, empty frames, crossings, low scores and degenerate boxes. Same IDs, same detection indices,
same filtered boxes, frame for frame."""
from __future__ import annotations

import numpy as np
import pytest

import helpers

pytest.importorskip("lap", reason="lap (LAPJV) is part of the 'models' extra")


def ultralytics_tracker():
    from ultralytics.cfg import get_cfg
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import ROOT

    return BYTETracker(get_cfg(ROOT / "cfg/trackers/bytetrack.yaml"))


def run_both(frames: list) -> list:
    """[(ours, theirs)] per frame for ``frames`` [(boxes (N, 4) xyxy, scores (N,))]; theirs reduced to our
    columns (x1, y1, x2, y2, id, score, detection index)."""
    from ultralytics.engine.results import Boxes

    from posefuse.kernels.track import ByteTrackReference

    ours, theirs = ByteTrackReference(), ultralytics_tracker()
    out = []
    for boxes, scores in frames:
        data = np.c_[boxes, scores, np.zeros(len(scores))].astype(np.float32).reshape(-1, 6)
        t = theirs.update(Boxes(data, (1080, 1920)))
        t = t[:, [0, 1, 2, 3, 4, 5, 7]] if len(t) else np.zeros((0, 7), np.float32)
        out.append((ours.update(boxes, scores), t))
    return out


def assert_same(pairs: list):
    for k, (a, b) in enumerate(pairs):
        a, b = a[np.argsort(a[:, 4])], b[np.argsort(b[:, 4])]
        assert a.shape == b.shape, f"frame {k}: {len(a)} vs {len(b)} tracks"
        np.testing.assert_array_equal(a[:, [4, 6]], b[:, [4, 6]], err_msg=f"frame {k}: ids / detection indices")
        np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-3, err_msg=f"frame {k}: boxes")
        np.testing.assert_allclose(a[:, 5], b[:, 5], atol=1e-6)


@pytest.fixture(scope="module")
def clip_detections():
    """Detections of the first 200 frames of each sample clip (CPU pipeline, imgsz 320), as the tracker
    sees them."""
    from posefuse import PosePipeline

    cpu_pipe = PosePipeline(device="cpu", imgsz=320)
    out = {}
    for name, n in (("one-by-one-person-detection.mp4", 200), ("face-demographics-walking.gif", None)):
        path = helpers.data_path(name)
        frames = helpers.read_gif(path) if name.endswith(".gif") else helpers.read_video(path, n)
        dets = []
        for i in range(0, len(frames), 16):
            for r in cpu_pipe(frames[i:i + 16]):
                dets.append((np.asarray(r.boxes, np.float32), np.asarray(r.scores, np.float32)))
        out[name] = dets
    return out


def test_reference_equals_ultralytics_bytetrack_on_the_sample_clips(clip_detections):
    for name, dets in clip_detections.items():
        pairs = run_both(dets)
        assert sum(len(a) for a, _ in pairs) > 0, name
        assert_same(pairs)


def _random_sequence(rng, frames: int, people: int) -> list:
    """People walking across a 1920x1080 image, entering and leaving, occluded at random, with jittered
    boxes, some low scores, some degenerate boxes, and empty frames."""
    pos = rng.uniform([0, 0], [1800, 900], (people, 2))
    vel = rng.normal(0, 6, (people, 2))
    size = rng.uniform([40, 90], [160, 360], (people, 2))
    alive = rng.random(people) < 0.5
    seq = []
    for _ in range(frames):
        alive ^= rng.random(people) < 0.03  # enter / leave
        pos += vel
        vel = np.where(((pos < 0) | (pos > [1800, 900])), -vel, vel)
        vis = alive & (rng.random(people) > 0.1)
        if rng.random() < 0.05:
            vis[:] = False  # an empty frame
        c = pos[vis] + rng.normal(0, 2, (vis.sum(), 2))
        wh = size[vis] * rng.uniform(0.95, 1.05, (vis.sum(), 2))
        boxes = np.c_[c - wh / 2, c + wh / 2].astype(np.float32)
        scores = rng.choice([0.05, 0.15, 0.2, 0.3, 0.6, 0.9], vis.sum()).astype(np.float32)
        if len(boxes) and rng.random() < 0.05:
            boxes[0, 2] = boxes[0, 0]  # zero width
        seq.append((boxes, scores))
    return seq


@pytest.mark.parametrize("seed, people", [(0, 3), (1, 12), (2, 40)])
def test_reference_equals_ultralytics_bytetrack_on_random_sequences(seed, people):
    assert_same(run_both(_random_sequence(np.random.default_rng(seed), 300, people)))


def test_empty_input_and_reset():
    from posefuse.kernels.track import ByteTrackReference

    t = ByteTrackReference()
    box, score = np.array([[10, 10, 50, 100]]), np.array([0.9])
    assert t.update(np.zeros((0, 4)), np.zeros(0)).shape == (0, 7)
    assert len(t.update(box, score)) == 0  # born after the first frame: confirmed by its second match
    rows = t.update(box, score)
    assert rows[:, 4].tolist() == [1.0] and rows[:, 6].tolist() == [0.0]
    t.reset()  # a source that ends or restarts: frame 1 again, IDs from 1
    assert t.update(box, score)[:, 4].tolist() == [1.0]


def test_a_tracked_run_gives_every_pose_its_stream_id(tmp_path):
    """run(track=True): each stream has its own tracker (two copies of a clip get the same IDs), the IDs
    equal the reference fed the stream's results in order, and the JSON lines carry them."""
    import json

    from posefuse import RunConfig, run
    from posefuse.kernels.track import ByteTrackReference

    clip = helpers.data_path("one-by-one-person-detection.mp4")
    got: dict = {}
    out = tmp_path / "poses.jsonl"
    rep = run(RunConfig(sources=[clip], repeat=2, max_frames=220, imgsz=320, device="cpu", runner="dynamic",
                        batch=8, track=True, save_json=str(out), progress=False),
              on_result=lambda r: got.setdefault(r.stream, []).append(r.poses))
    assert rep.exit_code == 0
    a, b = got.values()
    ref = ByteTrackReference()
    n_ids = 0
    for pa, pb in zip(a, b):
        assert pa.track_ids is not None and len(pa.track_ids) == len(pa)
        assert pa.track_ids.tolist() == pb.track_ids.tolist()
        rows = ref.update(pa.boxes, pa.scores)
        want = np.full(len(pa), -1)
        want[rows[:, 6].astype(int)] = rows[:, 4]
        assert pa.track_ids.tolist() == want.tolist()
        n_ids += int((pa.track_ids > 0).sum())
    assert n_ids > 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all("track_id" in p for line in lines for p in line["poses"])


def _states(seed: int, n: int):
    """Real filter states: a reference tracker run over a random sequence, its tracks' means and covariances."""
    from posefuse.kernels.track import ByteTrackReference

    t = ByteTrackReference()
    for boxes, scores in _random_sequence(np.random.default_rng(seed), 60, n):
        t.update(boxes, scores)
    tracks = t.tracked + t.lost
    mean = np.array([x.mean for x in tracks])
    cov = np.array([x.cov for x in tracks])
    tracked = np.array([x.state == 1 for x in tracks], np.uint8)
    return mean, cov, tracked


def _devices():
    from posefuse.kernels._common import numba_simulator

    sim = pytest.mark.skipif(not numba_simulator(), reason="the simulator runs on the CPU")
    return [pytest.param("cpu", "numba", marks=sim), pytest.param("cuda", "numba", marks=pytest.mark.gpu),
            pytest.param("cuda", "cupy", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device, backend", _devices())
def test_kalman_predict_and_update_match_the_reference(device, backend):
    import torch

    from posefuse.kernels.track import kalman_predict, kalman_update
    from posefuse.kernels.track.reference import kf_predict_tracks, kf_update

    mean, cov, tracked = _states(3, 30)
    assert len(mean) >= 10 and 0 < tracked.sum() < len(tracked)
    m_ref, c_ref = kf_predict_tracks(mean, cov, tracked)
    m, c = torch.from_numpy(mean).to(device), torch.from_numpy(cov).to(device)
    kalman_predict(m, c, torch.from_numpy(tracked).to(device), backend=backend)
    if backend == "cupy" or device == "cpu":  # the motion matrix is 0/1: the same sums, without FMA contraction
        np.testing.assert_array_equal(m.cpu().numpy(), m_ref)
        np.testing.assert_array_equal(c.cpu().numpy(), c_ref)
    else:  # Numba's compiler may contract the diagonal's q + v into an FMA
        np.testing.assert_allclose(m.cpu().numpy(), m_ref, rtol=1e-14)
        np.testing.assert_allclose(c.cpu().numpy(), c_ref, rtol=1e-14, atol=1e-300)
    rng = np.random.default_rng(4)
    rows = rng.choice(len(mean), len(mean) // 2, replace=False).astype(np.int32)
    z = m_ref[rows, :4] + rng.normal(0, 3, (len(rows), 4)) * [1, 1, 0.01, 1]
    kalman_update(m, c, torch.from_numpy(z).to(device), torch.from_numpy(rows).to(device), backend=backend)
    for j, i in enumerate(rows):
        mi, ci = kf_update(m_ref[i], c_ref[i], z[j])
        np.testing.assert_allclose(m.cpu().numpy()[i], mi, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(c.cpu().numpy()[i], ci, rtol=1e-9, atol=1e-9)
    untouched = np.setdiff1d(np.arange(len(mean)), rows)
    np.testing.assert_allclose(m.cpu().numpy()[untouched], m_ref[untouched], rtol=1e-14)


def test_kalman_arguments_are_checked():
    import torch

    from posefuse.kernels._common import KernelInputError
    from posefuse.kernels.track import kalman_predict, kalman_update

    m, c = torch.zeros(3, 8, dtype=torch.float64), torch.zeros(3, 8, 8, dtype=torch.float64)
    with pytest.raises(KernelInputError, match="mean: expected dtype float64, got float32"):
        kalman_predict(m.float(), c, torch.ones(3, dtype=torch.uint8))
    with pytest.raises(KernelInputError, match="tracked: expected 3 flags"):
        kalman_predict(m, c, torch.ones(2, dtype=torch.uint8))
    with pytest.raises(KernelInputError, match=r"rows: expected indices in \[0, 3\)"):
        kalman_update(m, c, torch.zeros(1, 4, dtype=torch.float64), torch.tensor([5], dtype=torch.int32))
    kalman_predict(m[:0], c[:0], torch.ones(0, dtype=torch.uint8))  # no tracks: nothing to do


def test_a_looping_source_restarts_its_tracker_each_pass():
    """A looping source's each pass starts its stream's tracker again (FrameResult.restart): the same
    frames get the same IDs in every pass."""
    from posefuse import RunConfig, RunControl, run

    got: list = []
    control = RunControl()  # ends the run once three passes are in

    def on_result(r):
        if r.index < 72:
            got.append((r.index, r.restart, r.poses.track_ids.tolist()))
        elif len(got) == 72:
            control.stop()

    rep = run(RunConfig(sources=[None], max_frames=24, loop=True, duration_s=300, imgsz=320, device="cpu",
                        runner="dynamic", batch=8, track=True, progress=False), on_result=on_result, control=control)
    assert rep.exit_code == 0 and len(got) == 72
    got.sort()
    assert [i for i, restart, _ in got if restart] == [24, 48]
    passes = [[ids for i, _, ids in got if k * 24 <= i < (k + 1) * 24] for k in range(3)]
    assert passes[0] == passes[1] == passes[2] and any(x > 0 for ids in passes[0] for x in ids)
