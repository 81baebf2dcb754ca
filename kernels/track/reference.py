"""CPU reference multi-object tracker: Ultralytics 8.4.190's ``BYTETracker`` with ``bytetrack.yaml``, written
out so each rule is visible (and the GPU implementations have one thing to equal):

* detections with w, h > 0 split by score: high (>= track_high_thresh) and low (> track_low_thresh and
  < track_high_thresh);
* every tracked and lost track is predicted by a constant-velocity Kalman filter on (x, y, a, h) (the
  aspect's velocity zeroed for tracks not currently tracked); its box comes from the predicted mean;
* first association: confirmed and lost tracks vs high detections, cost 1 - IoU fused with the detection
  score (1 - IoU * score), linear assignment (LAPJV, cost limit match_thresh); a lost track matched is
  re-found (same ID);
* second association: the tracked tracks left vs low detections, cost 1 - IoU, limit 0.5; tracked tracks
  still unmatched become lost;
* unconfirmed tracks (born last frame, not yet matched) vs the high detections left (fused, limit 0.7);
  those unmatched are removed; high detections left with score >= new_track_thresh start tracks (confirmed
  at once only on the first frame);
* lost tracks older than track_buffer frames are removed; a tracked and a lost track overlapping with
  1 - IoU < 0.15 keep the older one;
* output: the confirmed tracked tracks, each (x1, y1, x2, y2 of the filtered box, track id, score, index of
  its detection in the frame's input).
IDs count from 1 per tracker. Arithmetic follows the original's dtypes (float32 boxes, float64 filter).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRACKED, LOST, REMOVED = 1, 2, 3


@dataclass(frozen=True)
class ByteTrackConfig:
    """``bytetrack.yaml`` of Ultralytics 8.4.190."""

    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    track_buffer: int = 30
    match_thresh: float = 0.8
    fuse_score: bool = True
    match: str = "iou"  # posefuse's option: 'oks' matches on keypoint similarity (oks_cost) instead of IoU


# ------------------------------------------------------------------ Kalman filter on (x, y, a, h)
MOTION = np.eye(8)
MOTION[range(4), range(4, 8)] = 1.0
W_POS, W_VEL = 1.0 / 20, 1.0 / 160


def kf_initiate(m: np.ndarray):
    m = np.asarray(m, dtype=np.float64)
    mean = np.r_[m, np.zeros_like(m)]
    h = m[3]
    std = [2 * W_POS * h, 2 * W_POS * h, 1e-2, 2 * W_POS * h, 10 * W_VEL * h, 10 * W_VEL * h, 1e-5, 10 * W_VEL * h]
    return mean, np.diag(np.square(std))


def kf_multi_predict(mean: np.ndarray, cov: np.ndarray):
    """(N, 8), (N, 8, 8) -> predicted, as KalmanFilterXYAH.multi_predict."""
    h = mean[:, 3]
    std = [W_POS * h, W_POS * h, 1e-2 * np.ones_like(h), W_POS * h, W_VEL * h, W_VEL * h, 1e-5 * np.ones_like(h),
           W_VEL * h]
    sqr = np.square(np.r_[std]).T
    motion_cov = np.zeros((sqr.shape[0], 8, 8))
    motion_cov[:, range(8), range(8)] = sqr
    mean = np.dot(mean, MOTION.T)
    left = np.dot(MOTION, cov).transpose((1, 0, 2))
    return mean, np.dot(left, MOTION.T) + motion_cov


def kf_predict_tracks(mean: np.ndarray, cov: np.ndarray, tracked: np.ndarray):
    """The tracker's predict step: tracks not currently tracked have their aspect velocity zeroed, then
    all are predicted (a copy of ``mean``; returns the new mean and covariance)."""
    mean = np.array(mean, dtype=np.float64)
    mean[np.asarray(tracked) == 0, 7] = 0
    return kf_multi_predict(mean, cov)


def kf_update(mean: np.ndarray, cov: np.ndarray, m: np.ndarray):
    h = mean[3]
    proj_cov = cov[:4, :4] + np.diag(np.square([W_POS * h, W_POS * h, 1e-1, W_POS * h]))
    gain = np.linalg.solve(proj_cov, cov[:, :4].T).T
    new_mean = mean + np.dot(m - mean[:4], gain.T)
    return new_mean, cov - np.linalg.multi_dot((gain, proj_cov, gain.T))


# ------------------------------------------------------------------ boxes and costs
def xyxy_to_tlwh(xyxy: np.ndarray) -> np.ndarray:
    """float32 (x1, y1, w, h), through the original's path: xyxy2xywh in float32, then xywh2ltwh in float64."""
    b = np.asarray(xyxy, dtype=np.float32)
    xywh = np.empty_like(b)
    xywh[:, 0], xywh[:, 1] = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    xywh[:, 2], xywh[:, 3] = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    x = xywh.astype(np.float64)
    x[:, 0] -= x[:, 2] / 2
    x[:, 1] -= x[:, 3] / 2
    return x.astype(np.float32), xywh


def tlwh_to_xyah(tlwh: np.ndarray) -> np.ndarray:
    r = np.asarray(tlwh).copy()
    r[:2] += r[2:] / 2
    r[2] /= r[3]
    return r


def iou_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - IoU of xyxy boxes (float32), as matching.iou_distance with bbox_ioa(iou=True, eps=1e-7)."""
    out = np.zeros((len(a), len(b)), dtype=np.float32)
    if len(a) and len(b):
        a = np.ascontiguousarray(a, dtype=np.float32)
        b = np.ascontiguousarray(b, dtype=np.float32)
        inter = (np.minimum(a[:, None, 2], b[:, 2]) - np.maximum(a[:, None, 0], b[:, 0])).clip(0) * \
                (np.minimum(a[:, None, 3], b[:, 3]) - np.maximum(a[:, None, 1], b[:, 1])).clip(0)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        area = area + ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] - inter
        out = inter / (area + 1e-7)
    return 1 - out


def assign(cost: np.ndarray, thresh: float):
    """LAPJV with a cost limit (lap.lapjv(extend_cost=True, cost_limit=thresh)): matches, unmatched rows, cols."""
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    import lap

    _, x, y = lap.lapjv(cost, extend_cost=True, cost_limit=thresh)
    return [(i, int(j)) for i, j in enumerate(x) if j >= 0], list(np.where(x < 0)[0]), list(np.where(y < 0)[0])


# OKS as Ultralytics' pose validation computes it (metrics.kpt_iou, box area x 0.53), for the 'oks' match
OKS_SIGMA = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89,
                      0.89]) / 10.0
OKS_DEN = 2 * (2 * OKS_SIGMA) ** 2  # e = d^2 / (OKS_DEN * (area + 1e-7))
AREA_FRACTION = 0.53
KPT_CONF = 0.5  # a keypoint counts where both the track's and the detection's confidence exceed this


def oks_cost(tracks: list, dets: list) -> np.ndarray:
    """(T, D) float32: 1 - OKS of each track's keypoints, moved with its predicted center, and each
    detection's, over the keypoints both see (confidence > KPT_CONF), the scale the track's predicted box
    area x AREA_FRACTION; where they see no keypoint in common, 1 - IoU. Float64, summed over the
    keypoints in order (the device kernels' order)."""
    out = np.zeros((len(tracks), len(dets)), np.float32)
    for i, t in enumerate(tracks):
        m = t.mean
        area = m[2] * m[3] * m[3] * AREA_FRACTION
        kx = t.kpts[:, 0].astype(np.float64) + (m[0] - t.kc[0])
        ky = t.kpts[:, 1].astype(np.float64) + (m[1] - t.kc[1])
        for j, d in enumerate(dets):
            acc, n = 0.0, 0
            for k in range(17):
                if t.kpts[k, 2] > KPT_CONF and d.kpts[k, 2] > KPT_CONF:
                    dx = kx[k] - np.float64(d.kpts[k, 0])
                    dy = ky[k] - np.float64(d.kpts[k, 1])
                    acc += np.exp(-((dx * dx + dy * dy) / (OKS_DEN[k] * (area + 1e-7))))
                    n += 1
            out[i, j] = np.float32(1.0 - acc / n) if n else iou_cost(t.xyxy[None], d.xyxy[None])[0, 0]
    return out


class _Track:
    __slots__ = ("tlwh0", "mean", "cov", "state", "activated", "score", "id", "frame_id", "start_frame", "idx",
                 "kpts", "kc")

    def __init__(self, tlwh, score, idx, kpts=None):
        self.tlwh0, self.score, self.idx, self.kpts = tlwh, score, idx, kpts
        self.kc = None  # 'oks': the center of the detection its keypoints came from
        self.mean = self.cov = None
        self.state, self.activated, self.id, self.frame_id, self.start_frame = 0, False, 0, 0, 0

    @property
    def tlwh(self) -> np.ndarray:
        if self.mean is None:
            return self.tlwh0.copy()
        r = self.mean[:4].copy()
        r[2] *= r[3]
        r[:2] -= r[2:] / 2
        return r

    @property
    def xyxy(self) -> np.ndarray:
        r = self.tlwh
        r[2:] += r[:2]
        return r

    def take(self, det: "_Track", frame_id: int):
        """update / re_activate: the filter takes the detection; the track is tracked and confirmed."""
        z = tlwh_to_xyah(det.tlwh)
        self.mean, self.cov = kf_update(self.mean, self.cov, z)
        self.state, self.activated, self.frame_id = TRACKED, True, frame_id
        self.score, self.idx = det.score, det.idx
        self.kpts, self.kc = det.kpts, z[:2].astype(np.float64)


class ByteTrackReference:
    """One stream's tracker: ``update(boxes_xyxy (N, 4), scores (N,), keypoints (N, 17, 3) for the 'oks'
    match)`` per frame returns (M, 7) float32 rows (x1, y1, x2, y2, track id, score, detection index) for
    the confirmed tracked tracks."""

    def __init__(self, cfg: ByteTrackConfig = ByteTrackConfig()):
        self.cfg = cfg
        self.reset()

    def reset(self):
        self.tracked: list = []
        self.lost: list = []
        self.removed: list = []
        self.frame_id = 0
        self._next_id = 0

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _dists(self, tracks, dets, fuse: bool) -> np.ndarray:
        if self.cfg.match == "oks":
            cost = oks_cost(tracks, dets)
        else:
            cost = iou_cost(np.array([t.xyxy for t in tracks]).reshape(-1, 4),
                            np.array([d.xyxy for d in dets]).reshape(-1, 4))
        if fuse and cost.size:
            cost = 1 - (1 - cost) * np.array([d.score for d in dets])[None]
        return cost

    def update(self, boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray | None = None) -> np.ndarray:
        c = self.cfg
        if c.match not in ("iou", "oks"):
            raise ValueError(f"match: expected 'iou' or 'oks', got {c.match!r}")
        self.frame_id += 1
        fid = self.frame_id
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        kp = [None] * len(boxes)
        if c.match == "oks":
            if keypoints is None:
                raise ValueError("keypoints: the 'oks' match needs each detection's (17, 3) keypoints, got None")
            kp = np.asarray(keypoints, dtype=np.float32).reshape(len(boxes), 17, 3)
        tlwh, xywh = xyxy_to_tlwh(boxes)
        valid = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
        high = np.flatnonzero(valid & (scores >= c.track_high_thresh))
        low = np.flatnonzero(valid & (scores > c.track_low_thresh) & (scores < c.track_high_thresh))
        dets = [_Track(tlwh[i], scores[i], int(i), kp[i]) for i in high]
        dets_low = [_Track(tlwh[i], scores[i], int(i), kp[i]) for i in low]
        activated, refind, lost, removed = [], [], [], []
        unconfirmed = [t for t in self.tracked if not t.activated]
        confirmed = [t for t in self.tracked if t.activated]
        pool = _joint(confirmed, self.lost)
        if pool:
            mean, cov = kf_predict_tracks([t.mean for t in pool], np.asarray([t.cov for t in pool]),
                                          [t.state == TRACKED for t in pool])
            for t, m, v in zip(pool, mean, cov):
                t.mean, t.cov = m, v
        matches, u_track, u_det = assign(self._dists(pool, dets, c.fuse_score), c.match_thresh)
        for it, idt in matches:
            t = pool[it]
            (activated if t.state == TRACKED else refind).append(t)
            t.take(dets[idt], fid)
        rest = [pool[i] for i in u_track if pool[i].state == TRACKED]
        if rest and dets_low:
            matches, u_rest, _ = assign(self._dists(rest, dets_low, False), 0.5)
            for it, idt in matches:
                t = rest[it]
                (activated if t.state == TRACKED else refind).append(t)
                t.take(dets_low[idt], fid)
        else:
            u_rest = list(range(len(rest)))
        for i in u_rest:
            rest[i].state = LOST
            lost.append(rest[i])
        dets = [dets[i] for i in u_det]
        u_new = list(range(len(dets)))
        if unconfirmed:
            matches, u_unconf, u_new = assign(self._dists(unconfirmed, dets, c.fuse_score), 0.7)
            for it, idt in matches:
                unconfirmed[it].take(dets[idt], fid)
                activated.append(unconfirmed[it])
            for i in u_unconf:
                unconfirmed[i].state = REMOVED
                removed.append(unconfirmed[i])
        for i in u_new:
            d = dets[i]
            if d.score < c.new_track_thresh:
                continue
            d.id = self._new_id()
            z = tlwh_to_xyah(d.tlwh0)
            d.mean, d.cov = kf_initiate(z)
            d.kc = z[:2].astype(np.float64)
            d.state, d.activated, d.frame_id, d.start_frame = TRACKED, fid == 1, fid, fid
            activated.append(d)
        for t in self.lost:
            if fid - t.frame_id > c.track_buffer:
                t.state = REMOVED
                removed.append(t)
        self._merge(activated, refind, lost, removed)
        return np.asarray([[*t.xyxy.tolist(), t.id, t.score, t.idx] for t in self.tracked if t.activated],
                          dtype=np.float32).reshape(-1, 7)

    def _merge(self, activated, refind, lost, removed):
        tracked = [t for t in self.tracked if t.state == TRACKED]
        tracked = _joint(_joint(tracked, activated), refind)
        ids = {t.id for t in tracked}
        lost_all = [t for t in self.lost if t.id not in ids] + lost
        gone = {t.id for t in self.removed}
        lost_all = [t for t in lost_all if t.id not in gone]
        self.tracked, self.lost = _drop_duplicates(tracked, lost_all)
        self.removed = (self.removed + removed)[-1000:]


def _joint(a: list, b: list) -> list:
    ids = {t.id for t in a}
    return a + [t for t in b if t.id not in ids]


def _drop_duplicates(a: list, b: list, thresh: float = 0.15):
    """A tracked and a lost track with 1 - IoU < thresh: the younger one goes (remove_duplicate_stracks)."""
    cost = iou_cost(np.array([t.xyxy for t in a]).reshape(-1, 4), np.array([t.xyxy for t in b]).reshape(-1, 4))
    drop_a, drop_b = set(), set()
    for p, q in zip(*np.where(cost < thresh)):
        if a[p].frame_id - a[p].start_frame > b[q].frame_id - b[q].start_frame:
            drop_b.add(q)
        else:
            drop_a.add(p)
    return [t for i, t in enumerate(a) if i not in drop_a], [t for i, t in enumerate(b) if i not in drop_b]
