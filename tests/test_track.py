"""The tracker reference (kernels/track) against Ultralytics 8.4.190's BYTETracker with bytetrack.yaml, fed
the same detections: real detections of the sample clips (the CPU pipeline) and random sequences with
births, deaths, empty frames, crossings, low scores and degenerate boxes. Same IDs, same detection indices,
same filtered boxes, frame for frame."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import helpers

pytest.importorskip("lap", reason="lap (LAPJV) is part of the 'models' extra")


def run_both(frames: list) -> list:
    """[(ours, theirs)] per frame for ``frames`` [(boxes (N, 4) xyxy, scores (N,))]; theirs reduced to our
    columns (x1, y1, x2, y2, id, score, detection index)."""
    from ultralytics.engine.results import Boxes

    from posefuse.kernels.track import ByteTrackReference

    ours, theirs = ByteTrackReference(), helpers.ultralytics_tracker()
    out = []
    for boxes, scores, *_ in frames:
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
def clip_detections(tmp_path_factory):
    """Detections of the first 200 frames of each sample clip (CPU pipeline, imgsz 320) and of the first 80
    of the crowded clip (experiments/crowd_clip.py: a 4x4 mosaic of the sample clip, ~12 people a frame;
    imgsz 640; the data folder's copy (a GPU machine has no ffmpeg), else made where ffmpeg is), as the tracker
    sees them: (boxes, scores, keypoints) per frame."""
    import shutil

    from posefuse import PosePipeline

    clips = [("one-by-one-person-detection.mp4", 200, 320), ("face-demographics-walking.gif", None, 320)]
    crowd = Path(helpers.data_path(helpers.load_experiment("track_bench").CROWD))
    if not crowd.exists() and shutil.which("ffmpeg"):
        crowd = helpers.load_experiment("crowd_clip").make(tmp_path_factory.mktemp("crowd") / "crowd.mp4", 80)
    if crowd.exists():
        clips.append((str(crowd), 80, 640))
    out = {}
    for name, n, imgsz in clips:
        pipe = PosePipeline(device="cpu", imgsz=imgsz)
        path = name if name.startswith("/") else helpers.data_path(name)
        frames = helpers.read_gif(path) if name.endswith(".gif") else helpers.read_video(path, n)
        dets = []
        for i in range(0, len(frames), 16):
            for r in pipe(frames[i:i + 16]):
                dets.append((np.asarray(r.boxes, np.float32), np.asarray(r.scores, np.float32),
                             np.asarray(r.keypoints, np.float32).reshape(-1, 17, 3)))
        out[Path(name).name] = dets
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


SKELETON = np.array([[.5, .08], [.45, .06], [.55, .06], [.4, .08], [.6, .08], [.3, .25], [.7, .25], [.22, .42],
                     [.78, .42], [.18, .56], [.82, .56], [.38, .58], [.62, .58], [.38, .78], [.62, .78], [.38, .97],
                     [.62, .97]])  # a standing person's keypoints, as fractions of the box


def _with_keypoints(seq: list, rng) -> list:
    """A sequence's frames with keypoints: the skeleton in each box, jittered, confidences at random."""
    out = []
    for boxes, scores in seq:
        wh = boxes[:, None, 2:] - boxes[:, None, :2]
        xy = boxes[:, None, :2] + SKELETON[None] * wh + rng.normal(0, 2, (len(boxes), 17, 2))
        conf = rng.uniform(0, 1, (len(boxes), 17, 1))
        out.append((boxes, scores, np.concatenate([xy, conf], -1).astype(np.float32)))
    return out


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


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_tracked_run_gives_every_pose_its_stream_id(tmp_path, device):
    """run(track=True): each stream has its own tracks (two copies of a clip get the same IDs), the IDs
    equal the reference fed the stream's results in order (on a GPU run: the device tracker, all streams
    of a batch at once), and the JSON lines carry them."""
    import json

    from posefuse import RunConfig, run
    from posefuse.kernels.track import ByteTrackReference

    clip = helpers.data_path("one-by-one-person-detection.mp4")
    got: dict = {}
    out = tmp_path / "poses.jsonl"
    rep = run(RunConfig(sources=[clip], repeat=2, max_frames=220, imgsz=320, device=device, runner="dynamic",
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


def _pairs_batch(seqs: list, k: int):
    """Frame k's boxes as the tracks and frame k + 1's as the detections, one stream per sequence, padded."""
    import torch

    tracks = [s[k][0] for s in seqs]
    dets = [s[k + 1][:2] for s in seqs]
    S, T, D = len(seqs), max(1, max(len(t) for t in tracks)), max(1, max(len(b) for b, _ in dets))
    tr, de, sc = np.zeros((S, T, 4), np.float32), np.zeros((S, D, 4), np.float32), np.zeros((S, D), np.float32)
    for s in range(S):
        tr[s, :len(tracks[s])] = tracks[s]
        de[s, :len(dets[s][0])], sc[s, :len(dets[s][1])] = dets[s]
    counts = [np.array(x, np.int32) for x in ([len(t) for t in tracks], [len(b) for b, _ in dets])]
    return [torch.from_numpy(x) for x in (tr, counts[0], de, sc, counts[1])]


def _association_cases(clip_detections):
    """Padded batches: consecutive frames of random crowds (crossings, empty frames, degenerate boxes) and
    of the sample clips' real detections, one stream each, and streams with no tracks or no detections."""
    rng = np.random.default_rng(7)
    crowds = [_random_sequence(rng, 12, people) for people in (0, 2, 8, 15, 25)]
    real = list(clip_detections.values())
    for k in (0, 5, 10):
        yield _pairs_batch(crowds + [r[k * 3: k * 3 + 2] for r in real], 0)


@pytest.mark.parametrize("device, backend", _devices())
def test_batched_costs_and_assignment_match_the_reference(device, backend, clip_detections):
    import torch

    from posefuse.kernels.track import assign, iou_costs

    for tr, nt, de, sc, nd in _association_cases(clip_detections):
        ref = iou_costs(tr, nt, de, sc, nd, fuse=True, backend="reference")
        plain = iou_costs(tr, nt, de, sc, nd, fuse=False, backend="reference")
        args = [x.to(device) for x in (tr, nt, de, sc, nd)]
        got = iou_costs(*args, fuse=True, backend=backend).cpu()
        for s, (n, m) in enumerate(zip(nt.tolist(), nd.tolist())):
            if backend == "cupy" or device == "cpu":  # no FMA contraction: NumPy's float32 operations, bit for bit
                assert torch.equal(got[s, :n, :m], ref[s, :n, :m])
            else:
                torch.testing.assert_close(got[s, :n, :m], ref[s, :n, :m], rtol=0, atol=2e-7)
        assert not torch.equal(plain, ref) or not (sc < 1).any()
        for limit in (0.8, 0.5, 0.7):  # ByteTrack's three associations
            want = assign(ref, nt, nd, limit, backend="reference")
            assert (want >= 0).any()
            assert torch.equal(assign(ref.to(device), nt.to(device), nd.to(device), limit, backend=backend).cpu(), want)
    rng = np.random.default_rng(8)  # dense random costs: many competing pairs under the limit
    cost = torch.from_numpy(rng.uniform(0, 1, (16, 10, 12)).astype(np.float32))
    nt = torch.from_numpy(rng.integers(0, 11, 16).astype(np.int32))
    nd = torch.from_numpy(rng.integers(0, 13, 16).astype(np.int32))
    for limit in (0.9, 0.3):
        want = assign(cost, nt, nd, limit, backend="reference")
        got = assign(cost.to(device), nt.to(device), nd.to(device), limit, backend=backend).cpu()
        assert torch.equal(got, want) and int((want >= 0).sum()) > 20


def test_association_arguments_are_checked():
    import torch

    from posefuse.kernels._common import KernelInputError
    from posefuse.kernels.track import assign, iou_costs

    tr, de, sc = torch.zeros(2, 3, 4), torch.zeros(2, 5, 4), torch.zeros(2, 5)
    nt, nd = torch.tensor([3, 1], dtype=torch.int32), torch.tensor([5, 0], dtype=torch.int32)
    with pytest.raises(KernelInputError, match="n_tracks: expected counts in"):
        iou_costs(tr, torch.tensor([4, 0], dtype=torch.int32), de, sc, nd)
    with pytest.raises(KernelInputError, match="scores: expected"):
        iou_costs(tr, nt, de, torch.zeros(2, 4), nd)
    with pytest.raises(KernelInputError, match="tracks, dets"):
        iou_costs(tr, nt, torch.zeros(3, 5, 4), sc, nd)
    with pytest.raises(KernelInputError, match="n_dets: expected 2 counts"):
        assign(torch.zeros(2, 3, 5), nt, torch.zeros(3, dtype=torch.int32), 0.8)
    with pytest.raises(KernelInputError, match="limit"):
        assign(torch.zeros(2, 3, 5), nt, nd, 0.0)
    empty = assign(iou_costs(tr, torch.zeros(2, dtype=torch.int32), de, sc, nd), torch.zeros(2, dtype=torch.int32),
                   nd, 0.8)
    assert empty.shape == (2, 3) and (empty == -1).all()


def _interleaved(seqs: list, max_det: int, frames_per_batch: int):
    """The sequences as batches of rows (stream, frame), streams interleaved as a dynamic batcher mixes
    them, a stream's frames in order; yields (boxes, scores, counts, stream index per row, keypoints)."""
    import torch

    F = max(len(s) for s in seqs)
    for f0 in range(0, F, frames_per_batch):
        rows = [(s, f) for f in range(f0, f0 + frames_per_batch) for s in range(len(seqs)) if f < len(seqs[s])]
        boxes, scores = torch.zeros(len(rows), max_det, 4), torch.zeros(len(rows), max_det)
        kpts, counts = torch.zeros(len(rows), max_det, 17, 3), torch.zeros(len(rows), dtype=torch.int32)
        for b, (s, f) in enumerate(rows):
            bx, sc, kp = seqs[s][f]
            n = min(len(bx), max_det)
            boxes[b, :n], scores[b, :n], counts[b] = torch.from_numpy(bx[:n]), torch.from_numpy(sc[:n]), n
            kpts[b, :n] = torch.from_numpy(kp[:n])
        yield boxes, scores, counts, [s for s, _ in rows], kpts


def _tracker_streams(clip_detections) -> list:
    """Random crowds (0 to 30 people: births, deaths, crossings, empty frames, degenerate boxes, an
    all-lost spell) with keypoints, and the sample clips' real detections: one sequence per stream."""
    rng = np.random.default_rng(11)
    seqs = [_with_keypoints(_random_sequence(rng, 90, people), rng) for people in (0, 4, 12, 30)]
    seqs[2][30:40] = [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 17, 3), np.float32))] * 10
    return seqs + [d[:90] for d in clip_detections.values()]


@pytest.mark.parametrize("match", ["iou", "oks"])
@pytest.mark.parametrize("device, backend", _devices())
def test_batched_tracker_gives_the_reference_ids_on_every_frame(device, backend, match, clip_detections):
    """The streams of _tracker_streams interleaved in batches of uneven length, one stream restarting
    midway: the same track id on every detection of every frame as a ByteTrackReference per stream, with
    IoU and with the OKS match."""
    import torch

    from posefuse.kernels.track import ByteTrackBatch, ByteTrackConfig

    seqs, cfg = _tracker_streams(clip_detections), ByteTrackConfig(match=match)
    ref = ByteTrackBatch(len(seqs), 64, "cpu", cfg, backend="reference")
    got = ByteTrackBatch(len(seqs), 64, device, cfg, backend=backend, capacity=96)
    frames = ids = 0
    for k, (boxes, scores, counts, stream, kpts) in enumerate(_interleaved(seqs, 64, 7)):
        restart = [k == 6 and s == 1 for s in stream]
        want = ref.update(boxes, scores, counts, stream, restart, kpts)
        have = got.update(boxes.to(device), scores.to(device), counts.to(device), stream, restart,
                          kpts.to(device)).cpu()
        assert torch.equal(have, want), f"batch {k}"
        frames, ids = frames + len(stream), ids + int((want > 0).sum())
    assert frames == sum(len(s) for s in seqs) and ids > 500


def test_batched_tracker_arguments_and_capacity_are_checked():
    import torch

    from posefuse.kernels._common import KernelInputError, numba_simulator
    from posefuse.kernels.track import ByteTrackBatch

    t = ByteTrackBatch(2, 8, "cpu", backend="reference")
    boxes, scores, counts = torch.zeros(3, 8, 4), torch.zeros(3, 8), torch.zeros(3, dtype=torch.int32)
    with pytest.raises(KernelInputError, match="stream: expected 3 stream indices in"):
        t.update(boxes, scores, counts, [0, 1, 2])
    with pytest.raises(KernelInputError, match="boxes: expected"):
        t.update(torch.zeros(3, 9, 4), scores, counts, [0, 1, 1])
    with pytest.raises(KernelInputError, match="counts: expected counts in"):
        t.update(boxes, scores, torch.tensor([0, 9, 0], dtype=torch.int32), [0, 1, 1])
    with pytest.raises(KernelInputError, match="streams: expected"):
        ByteTrackBatch(0, 8, "cpu")
    if numba_simulator():
        small = ByteTrackBatch(1, 8, "cpu", backend="numba", capacity=4)
        boxes[0, :6] = torch.tensor([[10.0 * i, 0, 10.0 * i + 8, 20] for i in range(6)])
        scores[0, :6] = 0.9
        with pytest.raises(KernelInputError, match="capacity: streams \\[0\\] need more than 4"):
            small.update(boxes[:1], scores[:1], torch.tensor([6], dtype=torch.int32), [0])


@pytest.fixture(scope="module")
def host_track(tmp_path_factory):
    """track.cu built for the host (helpers.host_build): the CUDA C source's logic, checked on the CPU."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    from posefuse.kernels.track.cupy_impl import CU, DEFINES

    return helpers.host_build(CU, dict(DEFINES), tmp_path_factory.mktemp("host_track"), prelude=ONE_LANE)


# the warp built-ins track.cu uses, for a block of one lane (set_thread(block, 1, 0)): each loop is then the
# serial algorithm, which the GPU tests compare with the warp of 32
ONE_LANE = """#define __syncwarp() ((void)0)
static inline unsigned __ballot_sync(unsigned, bool p) { return p ? 1u : 0u; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
template <class T> static inline T __shfl_sync(unsigned, T v, int) { return v; }
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int) { return v; }
"""


def _c(*arrays):
    import ctypes

    return [ctypes.c_void_p(a.data_ptr()) for a in arrays]


def _each_thread(lib, n: int, kernel: str, *args):
    for i in range(n):
        lib.set_thread(i, 1, 0)
        getattr(lib, kernel)(*args)


@pytest.mark.parametrize("match", ["iou", "oks"])
def test_track_cu_built_for_the_host_matches_the_reference(host_track, clip_detections, match):
    """The CUDA C of track.cu (the CuPy backend's source), run on the CPU: bit-equal costs, lap's matches,
    and ByteTrackBatch's kernel giving the reference's ids on every frame."""
    import ctypes

    import torch

    from posefuse.kernels.track import ByteTrackBatch, ByteTrackConfig, assign, iou_costs
    from posefuse.kernels.track import SCRATCH, STATE

    I, F32, F64 = ctypes.c_int, ctypes.c_float, ctypes.c_double
    for tr, nt, de, sc, nd in _association_cases(clip_detections):
        S, T, D = tr.shape[0], tr.shape[1], de.shape[1]
        ref = iou_costs(tr, nt, de, sc, nd, fuse=True, backend="reference")
        got = torch.zeros_like(ref)
        lib = host_track
        for k in range(S * T * D):
            lib.set_thread(k, 1, 0)
            lib.iou_cost_f32(*_c(tr, nt, de, sc, nd, got), I(S), I(T), I(D), I(1))
        for s, (n, m) in enumerate(zip(nt.tolist(), nd.tolist())):
            assert torch.equal(got[s, :n, :m], ref[s, :n, :m])
        for limit in (0.8, 0.5, 0.7):
            want = assign(ref, nt, nd, limit, backend="reference")
            matched = torch.zeros((S, T), dtype=torch.int32)
            w = T + D + 1
            work = [torch.zeros((S, w), dtype=dt) for dt in (torch.float64,) * 3 + (torch.int32,) * 2 + (torch.uint8,)]
            _each_thread(lib, S, "lap_f64", *_c(ref, nt, nd, matched, *work), I(S), I(T), I(D), F64(limit))
            assert torch.equal(matched, want)
    seqs, c = _tracker_streams(clip_detections), ByteTrackConfig(match=match)
    ref = ByteTrackBatch(len(seqs), 64, "cpu", c, backend="reference")
    K, M = 96, 64
    shapes = ByteTrackBatch.shapes(len(seqs), K, M)
    state = {k: torch.zeros(shapes[k][0], dtype=shapes[k][1]) for k in STATE}
    scratch = {k: torch.zeros(shapes[k][0], dtype=shapes[k][1]) for k in SCRATCH}
    for k, (boxes, scores, counts, stream, kpts) in enumerate(_interleaved(seqs, M, 7)):
        restart = np.array([k == 6 and s == 1 for s in stream], np.int32)
        want = ref.update(boxes, scores, counts, stream, restart, kpts)
        order, n_frames = ByteTrackBatch.order(np.asarray(stream), len(seqs))
        ids = torch.zeros_like(want)
        args = _c(boxes, scores, counts, torch.from_numpy(order), torch.from_numpy(n_frames),
                  torch.from_numpy(restart), ids, kpts) + _c(*(state[x] for x in STATE)) + \
            _c(*(scratch[x] for x in SCRATCH))
        _each_thread(host_track, len(seqs), "bytetrack_f64", *args, I(len(seqs)), I(K), I(M), I(order.shape[1]),
                     F32(c.track_high_thresh), F32(c.track_low_thresh), F32(c.new_track_thresh), I(c.track_buffer),
                     F64(c.match_thresh), I(int(c.fuse_score)), I(int(match == "oks")))
        assert torch.equal(ids, want), f"batch {k}"


@pytest.mark.parametrize("runner", ["replicas", "ultralytics"])
def test_track_is_refused_where_a_stream_is_not_submitted_in_order(runner):
    """The pipeline tracks a stream's frames in the order one thread submits them: the replicas runner
    (several submitting threads) and the ultralytics runner (no pipeline) refuse ``track``, naming it."""
    from posefuse import RunConfig
    from posefuse.runners.config import ConfigError

    with pytest.raises(ConfigError, match="track: the pipeline tracks each stream's frames in order"):
        RunConfig(sources=[None], runner=runner, device="cpu", track=True).validated()


def test_a_forgotten_streams_row_goes_to_the_next_stream_which_starts_it_over(clip_detections):
    """StreamTracker.forget (a service's finished streams): the next new stream takes the row, no tracker is
    added, and its tracks start over (ids from 1, as a stream's first frame gives them)."""
    import torch

    from posefuse.fusion.tracking import StreamTracker

    seq = clip_detections["one-by-one-person-detection.mp4"][100:130]
    t = StreamTracker("cpu", max_det=64)

    def frame(k):
        b, s, _ = seq[k]
        boxes, scores = torch.zeros(1, 64, 4), torch.zeros(1, 64)
        boxes[0, :len(b)], scores[0, :len(s)] = torch.from_numpy(b), torch.from_numpy(s)
        return boxes, scores, torch.tensor([len(b)], dtype=torch.int32)

    def step(name, k):
        ids = torch.zeros(1, 64, dtype=torch.int32)
        t.step(*frame(k), ids, [name], [False])
        return ids[0].tolist()

    first = [step("a", k) for k in range(10)]
    assert any(x > 0 for ids in first for x in ids)
    t.forget(["a"])
    again = [step("b", k) for k in range(10)]  # the same frames on the row "a" held
    assert again == first and t.index == {"b": 0} and len(t.trackers) == 1
    step("c", 0)
    assert t.index == {"b": 0, "c": 1}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_more_streams_than_a_tracker_holds_share_a_batch(device, clip_detections):
    """70 streams of the same frames in each batch (two ByteTrackBatches of 64 rows): every stream gets the
    ids the first one gets, the second tracker's rows gathered and scattered back in place."""
    import torch

    from posefuse.fusion.tracking import STREAMS_PER_TRACKER, StreamTracker

    seq, S, M = clip_detections["one-by-one-person-detection.mp4"][100:108], 70, 32
    t = StreamTracker(device, max_det=M)
    for b, s, _ in seq:
        boxes, scores = torch.zeros(S, M, 4), torch.zeros(S, M)
        boxes[:, :len(b)], scores[:, :len(s)] = torch.from_numpy(b), torch.from_numpy(s)
        counts = torch.full((S,), len(b), dtype=torch.int32)
        ids = torch.zeros(S, M, dtype=torch.int32, device=device)
        t.step(boxes.to(device), scores.to(device), counts.to(device), ids, [f"s{k}" for k in range(S)], [False] * S)
        t.check()
        got = ids.cpu()
        assert (got == got[:1]).all()
    assert len(t.trackers) == 2 and S > STREAMS_PER_TRACKER and (got[0] > 0).any()
