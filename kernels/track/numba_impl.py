"""Numba CUDA kernels of the tracker, for every stream of a batch at once (the algorithms of track.cu, which
says why): the Kalman filter, one thread per track, float64, the arithmetic of
reference.kf_multi_predict / kf_update (predict is bit-equal: its motion matrix is 0/1; the update solves
the 4x4 innovation system by LU with partial pivoting, as LAPACK's gesv does); the fused IoU costs, one
thread per (stream, track, detection); the assignment with a cost limit, one thread per stream."""
from __future__ import annotations

import math

import numpy as np

from .._common import numba_array, numba_cuda, numba_stream
from . import LAP_WORK, SCRATCH, STATE
from .reference import AREA_FRACTION, KPT_CONF, OKS_DEN

cuda = numba_cuda()  # module global: the simulator swaps it for its own (NUMBA_ENABLE_CUDASIM=1)

BLOCK = 128
COST_BLOCK = (1, 8, 16)  # (stream, track, detection) threads of a cost block
ASSIGN_BLOCK = 32  # streams per block of the assignment (one thread each)
BIG = 1e300
W_POS, W_VEL = 1.0 / 20, 1.0 / 160
_KERNELS: dict = {}


def _kernels():
    if _KERNELS:
        return _KERNELS

    @cuda.jit(device=True)
    def kf_predict_row(m, P, tracked):
        """One track's predict, in place: m (8,), P (8, 8)."""
        if tracked == 0:
            m[7] = 0.0
        h = m[3]
        sp = W_POS * h
        sv = W_VEL * h
        q = cuda.local.array(8, np.float64)
        q[0] = sp * sp
        q[1] = sp * sp
        q[2] = 1e-2 * 1e-2
        q[3] = sp * sp
        q[4] = sv * sv
        q[5] = sv * sv
        q[6] = 1e-5 * 1e-5
        q[7] = sv * sv
        for k in range(4):
            m[k] = m[k] + m[k + 4]
        left = cuda.local.array((8, 8), np.float64)  # F P: rows k < 4 add row k + 4
        for r in range(8):
            for c in range(8):
                left[r, c] = P[r, c] + P[r + 4, c] if r < 4 else P[r, c]
        for r in range(8):
            for c in range(8):
                v = left[r, c] + left[r, c + 4] if c < 4 else left[r, c]  # (F P) F^T
                P[r, c] = v + q[r] if r == c else v

    @cuda.jit(device=True)
    def kf_update_row(m, P, z0, z1, z2, z3):
        """One track takes the measurement (z0, z1, z2, z3), in place."""
        sp = W_POS * m[3]
        s = cuda.local.array((4, 4), np.float64)
        for r in range(4):
            for c in range(4):
                s[r, c] = P[r, c]
        s[0, 0] += sp * sp
        s[1, 1] += sp * sp
        s[2, 2] += 1e-1 * 1e-1
        s[3, 3] += sp * sp
        # solve S X = P[:, :4]^T (4 x 8) by LU with partial pivoting; the gain K = X^T (8 x 4)
        a = cuda.local.array((4, 4), np.float64)
        x = cuda.local.array((4, 8), np.float64)
        for r in range(4):
            for c in range(4):
                a[r, c] = s[r, c]
            for c in range(8):
                x[r, c] = P[c, r]
        for k in range(4):
            p = k
            for r in range(k + 1, 4):
                if abs(a[r, k]) > abs(a[p, k]):
                    p = r
            if p != k:
                for c in range(4):
                    t = a[k, c]
                    a[k, c] = a[p, c]
                    a[p, c] = t
                for c in range(8):
                    t = x[k, c]
                    x[k, c] = x[p, c]
                    x[p, c] = t
            for r in range(k + 1, 4):
                f = a[r, k] / a[k, k]
                for c in range(k, 4):
                    a[r, c] -= f * a[k, c]
                for c in range(8):
                    x[r, c] -= f * x[k, c]
        for k in range(3, -1, -1):
            for c in range(8):
                v = x[k, c]
                for r in range(k + 1, 4):
                    v -= a[k, r] * x[r, c]
                x[k, c] = v / a[k, k]
        innov = cuda.local.array(4, np.float64)
        innov[0] = z0 - m[0]
        innov[1] = z1 - m[1]
        innov[2] = z2 - m[2]
        innov[3] = z3 - m[3]
        for r in range(8):
            v = 0.0
            for k in range(4):
                v += innov[k] * x[k, r]
            m[r] = m[r] + v
        ks = cuda.local.array((8, 4), np.float64)  # K S
        for r in range(8):
            for c in range(4):
                v = 0.0
                for k in range(4):
                    v += x[k, r] * s[k, c]
                ks[r, c] = v
        for r in range(8):
            for c in range(8):
                v = 0.0
                for k in range(4):
                    v += ks[r, k] * x[k, c]
                P[r, c] = P[r, c] - v

    @cuda.jit(device=True)
    def iou_cost_one(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2):
        """1 - IoU of two float32 xyxy boxes in reference.iou_cost's order of operations."""
        iw = max(min(ax2, bx2) - max(ax1, bx1), np.float32(0))
        ih = max(min(ay2, by2) - max(ay1, by1), np.float32(0))
        inter = iw * ih
        area = (bx2 - bx1) * (by2 - by1) + (ax2 - ax1) * (ay2 - ay1) - inter
        return np.float32(1) - inter / (area + np.float32(1e-7))

    @cuda.jit(device=True)
    def lap_one(c, n, m, limit, u, v, minv, p, way, used, rowsol):
        """lap.lapjv(c[:n, :m], extend_cost=True, cost_limit=limit) as the equivalent rectangular problem, the
        smaller side as rows (track.cu's lap_one says why): rowsol[r] is the column of row r, or -1."""
        for r in range(n):
            rowsol[r] = -1
        if n == 0 or m == 0:
            return
        flip = n > m  # rows: the detections when they are fewer than the tracks
        a, b = (m, n) if flip else (n, m)
        nn = a + b
        for j in range(nn + 1):
            u[j] = 0.0
            v[j] = 0.0
            p[j] = 0
            way[j] = 0
        for i in range(1, a + 1):  # rows 1..a, columns 1..a + b; p[j]: the row holding column j (0: none)
            p[0] = i
            j0 = 0
            for j in range(nn + 1):
                minv[j] = BIG
                used[j] = 0
            while True:
                used[j0] = 1
                i0 = p[j0]
                delta = BIG
                j1 = 0
                for j in range(1, nn + 1):
                    if used[j]:
                        continue
                    r, q = i0 - 1, j - 1
                    if q < b:  # a pair costs c - limit; a row left unmatched (q >= b) 0
                        cij = (np.float64(c[q, r]) if flip else np.float64(c[r, q])) - limit
                    else:
                        cij = 0.0
                    cur = cij - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
                for j in range(nn + 1):
                    if used[j]:
                        u[p[j]] += delta
                        v[j] -= delta
                    else:
                        minv[j] -= delta
                j0 = j1
                if p[j0] == 0:
                    break
            while j0:
                j1 = way[j0]
                p[j0] = p[j1]
                j0 = j1
        for j in range(1, b + 1):
            if p[j] >= 1:
                if flip:
                    rowsol[j - 1] = p[j] - 1
                else:
                    rowsol[p[j] - 1] = j - 1

    @cuda.jit
    def kf_predict_f64(mean, cov, tracked):
        i = cuda.grid(1)
        if i < mean.shape[0]:
            kf_predict_row(mean[i], cov[i], tracked[i])

    @cuda.jit
    def kf_update_f64(mean, cov, z, rows):
        j = cuda.grid(1)
        if j < rows.shape[0]:
            i = rows[j]
            kf_update_row(mean[i], cov[i], z[j, 0], z[j, 1], z[j, 2], z[j, 3])

    @cuda.jit
    def iou_cost_f32(tracks, n_tracks, dets, scores, n_dets, cost, fuse):
        s, i, j = cuda.grid(3)
        if s >= cost.shape[0] or i >= n_tracks[s] or j >= n_dets[s]:
            return
        c = iou_cost_one(tracks[s, i, 0], tracks[s, i, 1], tracks[s, i, 2], tracks[s, i, 3],
                         dets[s, j, 0], dets[s, j, 1], dets[s, j, 2], dets[s, j, 3])
        if fuse:
            c = np.float32(1) - (np.float32(1) - c) * scores[s, j]
        cost[s, i, j] = c

    @cuda.jit
    def lap_f64(cost, n_tracks, n_dets, match, u, v, minv, p, way, used, limit):
        s = cuda.grid(1)
        if s < cost.shape[0]:
            for i in range(match.shape[1]):
                match[s, i] = -1
            lap_one(cost[s], n_tracks[s], n_dets[s], limit, u[s], v[s], minv[s], p[s], way[s], used[s], match[s])

    _KERNELS.update(predict=kf_predict_f64, update=kf_update_f64, cost=iou_cost_f32, assign=lap_f64,
                    predict_row=kf_predict_row, update_row=kf_update_row, iou_one=iou_cost_one, lap_one=lap_one)
    return _KERNELS


FREE, TRACKED, LOST, REMOVED = 0, 1, 2, 3


def _tracker():
    """The whole ByteTrack update, one thread per stream over its frames of the batch (track.cu says why)."""
    if "tracker" in _KERNELS:
        return _KERNELS["tracker"]
    k = _kernels()
    kf_predict_row, kf_update_row, iou_one, lap_one = k["predict_row"], k["update_row"], k["iou_one"], k["lap_one"]

    @cuda.jit(device=True)
    def track_xyxy(m, out):
        """The track's box from its mean (reference _Track.xyxy, float64), as float32 for the costs."""
        w = m[2] * m[3]
        x1 = m[0] - w / 2
        y1 = m[1] - m[3] / 2
        out[0] = np.float32(x1)
        out[1] = np.float32(y1)
        out[2] = np.float32(x1 + w)
        out[3] = np.float32(y1 + m[3])

    @cuda.jit(device=True)
    def oks_one(m, tk, tc, dk):
        """reference.oks_cost for one pair: 1 - OKS (float32), or -1 where no keypoint is seen by both."""
        area = m[2] * m[3] * m[3] * AREA_FRACTION
        sx = m[0] - tc[0]
        sy = m[1] - tc[1]
        acc = 0.0
        n = 0
        for k in range(17):
            if tk[k, 2] > KPT_CONF and dk[k, 2] > KPT_CONF:
                dx = (np.float64(tk[k, 0]) + sx) - np.float64(dk[k, 0])
                dy = (np.float64(tk[k, 1]) + sy) - np.float64(dk[k, 1])
                acc += math.exp(-((dx * dx + dy * dy) / (OKS_DEN[k] * (area + 1e-7))))
                n += 1
        if n == 0:
            return np.float32(-1)
        return np.float32(1.0 - acc / n)

    @cuda.jit(device=True)
    def costs(rows, n, cols, m, fuse, mean, dxyxy, dscore, cost, oks, tkp, tkc, dkp):
        """cost[:n, :m]: tracks ``rows`` (slots) x detections ``cols`` (indices of dxyxy); 'oks': keypoint
        similarity (tkp, tkc: the tracks' keypoints and their center; dkp: the frame's detections')."""
        a = cuda.local.array(4, np.float32)
        for r in range(n):
            t = rows[r]
            track_xyxy(mean[t], a)
            for q in range(m):
                j = cols[q]
                c = np.float32(-1)
                if oks:
                    c = oks_one(mean[t], tkp[t], tkc[t], dkp[j])
                if c < 0:
                    c = iou_one(a[0], a[1], a[2], a[3], dxyxy[j, 0], dxyxy[j, 1], dxyxy[j, 2], dxyxy[j, 3])
                if fuse:
                    c = np.float32(1) - (np.float32(1) - c) * dscore[j]
                cost[r, q] = c

    @cuda.jit(device=True)
    def joint(dst, n, src, count, mark):
        """reference _joint: dst[:n], then the slots of src[:count] not in it yet (mark 1); the new n."""
        for q in range(count):
            t = src[q]
            if not mark[t]:
                dst[n] = t
                n += 1
                mark[t] = 1
        return n

    @cuda.jit(device=True)
    def kept(dst, src, count, mark):
        """dst = the slots of src[:count] not dropped (mark 2), in order; their number."""
        n = 0
        for q in range(count):
            if mark[src[q]] != 2:
                dst[n] = src[q]
                n += 1
        return n

    @cuda.jit(device=True)
    def keep_kpts(t, j, tkp, tkc, dkp, dxyah):
        """'oks': track t keeps detection j's keypoints and center."""
        for k in range(17):
            for c in range(3):
                tkp[t, k, c] = dkp[j, k, c]
        tkc[t, 0] = np.float64(dxyah[j, 0])
        tkc[t, 1] = np.float64(dxyah[j, 1])

    @cuda.jit(device=True)
    def take(t, j, fid, mean, cov, st, act, score, idx, frame, dxyah, dscore, oks, tkp, tkc, dkp):
        """reference _Track.take: the filter takes detection j; the track is tracked and confirmed."""
        if oks:
            keep_kpts(t, j, tkp, tkc, dkp, dxyah)
        kf_update_row(mean[t], cov[t], np.float64(dxyah[j, 0]), np.float64(dxyah[j, 1]), np.float64(dxyah[j, 2]),
                      np.float64(dxyah[j, 3]))
        st[t] = TRACKED
        act[t] = 1
        frame[t] = fid
        score[t] = dscore[j]
        idx[t] = j

    @cuda.jit
    def bytetrack_f64(boxes, scores, counts, order, n_frames, restart, ids, kpts_in,
                      tid, st, act, score, idx, frame, start, mean, cov, trk, ntrk, lst, nlst, fids, next_id,
                      overflow, tkp, tkc, rm_at, hi, lo, dxyxy, dxyah, dscore, pool, rest, unconf, dleft, acts, refs, lost_new,
                      new_trk, new_lst, mark, rowsol, cost, u, v, minv, p, way, used,
                      high, low, new_thresh, buffer, match_thresh, fuse, oks):
        s = cuda.grid(1)
        if s >= order.shape[0]:
            return
        K = tid.shape[1]
        for f in range(n_frames[s]):
            b = order[s, f]
            if restart[b]:
                for t in range(K):
                    st[s, t] = FREE
                ntrk[s] = 0
                nlst[s] = 0
                fids[s] = 0
                next_id[s] = 0
            fids[s] += 1
            fid = fids[s]
            for j in range(ids.shape[1]):
                ids[b, j] = 0
            # detections: tlwh through the original's dtypes (float32 xywh, float64 ltwh, float32), split by score
            nhi = 0
            nlo = 0
            for j in range(counts[b]):
                cx = (boxes[b, j, 0] + boxes[b, j, 2]) / np.float32(2)
                cy = (boxes[b, j, 1] + boxes[b, j, 3]) / np.float32(2)
                w = boxes[b, j, 2] - boxes[b, j, 0]
                h = boxes[b, j, 3] - boxes[b, j, 1]
                x1 = np.float32(np.float64(cx) - np.float64(w) / 2)
                y1 = np.float32(np.float64(cy) - np.float64(h) / 2)
                dxyxy[s, j, 0] = x1
                dxyxy[s, j, 1] = y1
                dxyxy[s, j, 2] = x1 + w
                dxyxy[s, j, 3] = y1 + h
                dxyah[s, j, 0] = x1 + w / np.float32(2)
                dxyah[s, j, 1] = y1 + h / np.float32(2)
                dxyah[s, j, 2] = w / h if h != 0 else np.float32(0)
                dxyah[s, j, 3] = h
                sc = scores[b, j]
                dscore[s, j] = sc
                if w > 0 and h > 0:
                    if sc >= high:
                        hi[s, nhi] = j
                        nhi += 1
                    elif sc > low:
                        lo[s, nlo] = j
                        nlo += 1
            # the pool: confirmed tracked tracks, then the lost ones; predicted
            npool = 0
            nunc = 0
            for q in range(ntrk[s]):
                t = trk[s, q]
                if act[s, t]:
                    pool[s, npool] = t
                    npool += 1
                else:
                    unconf[s, nunc] = t
                    nunc += 1
            for q in range(nlst[s]):
                pool[s, npool] = lst[s, q]
                npool += 1
            for q in range(npool):
                t = pool[s, q]
                kf_predict_row(mean[s, t], cov[s, t], 1 if st[s, t] == TRACKED else 0)
            nact = 0
            nref = 0
            nlost = 0
            # first association: the pool vs the high detections (fused), limit match_thresh
            dkp = kpts_in[b] if oks else kpts_in[0]
            costs(pool[s], npool, hi[s], nhi, fuse, mean[s], dxyxy[s], dscore[s], cost[s], oks, tkp[s], tkc[s], dkp)
            lap_one(cost[s], npool, nhi, match_thresh, u[s], v[s], minv[s], p[s], way[s], used[s], rowsol[s])
            for j in range(nhi):
                mark[s, j] = 0
            nrest = 0
            for q in range(npool):
                t = pool[s, q]
                j = rowsol[s, q]
                if j >= 0:
                    mark[s, j] = 1
                    if st[s, t] == TRACKED:
                        acts[s, nact] = t
                        nact += 1
                    else:
                        refs[s, nref] = t
                        nref += 1
                    take(t, hi[s, j], fid, mean[s], cov[s], st[s], act[s], score[s], idx[s], frame[s], dxyah[s],
                         dscore[s], oks, tkp[s], tkc[s], dkp)
                elif st[s, t] == TRACKED:
                    rest[s, nrest] = t
                    nrest += 1
            nleft = 0
            for j in range(nhi):
                if not mark[s, j]:
                    dleft[s, nleft] = hi[s, j]
                    nleft += 1
            # second association: the tracked tracks left vs the low detections (IoU), limit 0.5
            if nrest and nlo:
                costs(rest[s], nrest, lo[s], nlo, 0, mean[s], dxyxy[s], dscore[s], cost[s], oks, tkp[s], tkc[s], dkp)
                lap_one(cost[s], nrest, nlo, 0.5, u[s], v[s], minv[s], p[s], way[s], used[s], rowsol[s])
            else:
                for q in range(nrest):
                    rowsol[s, q] = -1
            for q in range(nrest):
                t = rest[s, q]
                if rowsol[s, q] >= 0:
                    acts[s, nact] = t
                    nact += 1
                    take(t, lo[s, rowsol[s, q]], fid, mean[s], cov[s], st[s], act[s], score[s], idx[s], frame[s],
                         dxyah[s], dscore[s], oks, tkp[s], tkc[s], dkp)
                else:
                    st[s, t] = LOST
                    lost_new[s, nlost] = t
                    nlost += 1
            # unconfirmed tracks vs the high detections left (fused), limit 0.7; the rest are removed
            nbirth = nleft
            if nunc:
                costs(unconf[s], nunc, dleft[s], nleft, fuse, mean[s], dxyxy[s], dscore[s], cost[s], oks, tkp[s], tkc[s],
                      dkp)
                lap_one(cost[s], nunc, nleft, 0.7, u[s], v[s], minv[s], p[s], way[s], used[s], rowsol[s])
                for q in range(nleft):
                    mark[s, q] = 0
                for q in range(nunc):
                    t = unconf[s, q]
                    j = rowsol[s, q]
                    if j >= 0:
                        mark[s, j] = 1
                        take(t, dleft[s, j], fid, mean[s], cov[s], st[s], act[s], score[s], idx[s], frame[s],
                             dxyah[s], dscore[s], oks, tkp[s], tkc[s], dkp)
                        acts[s, nact] = t
                        nact += 1
                    else:
                        st[s, t] = REMOVED
                        rm_at[s, t] = fid
                nbirth = 0
                for q in range(nleft):
                    if not mark[s, q]:
                        dleft[s, nbirth] = dleft[s, q]
                        nbirth += 1
            # births: the high detections left with score >= new_thresh (confirmed at once on frame 1 only)
            for q in range(nbirth):
                j = dleft[s, q]
                if dscore[s, j] < new_thresh:
                    continue
                t = 0
                while t < K and st[s, t] != FREE:
                    t += 1
                if t == K:
                    overflow[s] = 1
                    continue
                next_id[s] += 1
                tid[s, t] = next_id[s]
                hh = np.float64(dxyah[s, j, 3])
                for c in range(4):
                    mean[s, t, c] = np.float64(dxyah[s, j, c])
                    mean[s, t, c + 4] = 0.0
                for r in range(8):
                    for c in range(8):
                        cov[s, t, r, c] = 0.0
                sd = 2 * W_POS * hh
                cov[s, t, 0, 0] = sd * sd
                cov[s, t, 1, 1] = sd * sd
                cov[s, t, 2, 2] = 1e-2 * 1e-2
                cov[s, t, 3, 3] = sd * sd
                sd = 10 * W_VEL * hh
                cov[s, t, 4, 4] = sd * sd
                cov[s, t, 5, 5] = sd * sd
                cov[s, t, 6, 6] = 1e-5 * 1e-5
                cov[s, t, 7, 7] = sd * sd
                st[s, t] = TRACKED
                act[s, t] = 1 if fid == 1 else 0
                frame[s, t] = fid
                start[s, t] = fid
                score[s, t] = dscore[s, j]
                idx[s, t] = j
                rm_at[s, t] = 0
                if oks:
                    keep_kpts(t, j, tkp[s], tkc[s], dkp, dxyah[s])
                acts[s, nact] = t
                nact += 1
            # lost tracks past the buffer are removed; as in Ultralytics, one removed now stays among the lost
            # (it can be re-found) until the next frame's merge, which drops every track removed before
            for q in range(nlst[s]):
                t = lst[s, q]
                if fid - frame[s, t] > buffer:
                    st[s, t] = REMOVED
                    if rm_at[s, t] == 0:
                        rm_at[s, t] = fid
            # merge (reference _merge): tracked = old tracked still tracked + activated + refound, in order
            for t in range(K):
                mark[s, t] = 0
            n1 = 0
            for q in range(ntrk[s]):
                t = trk[s, q]
                if st[s, t] == TRACKED:
                    new_trk[s, n1] = t
                    n1 += 1
                    mark[s, t] = 1
            n1 = joint(new_trk[s], n1, acts[s], nact, mark[s])
            n1 = joint(new_trk[s], n1, refs[s], nref, mark[s])
            n2 = 0
            for q in range(nlst[s]):
                t = lst[s, q]
                if not mark[s, t] and not 0 < rm_at[s, t] < fid:
                    new_lst[s, n2] = t
                    n2 += 1
            for q in range(nlost):
                if not 0 < rm_at[s, lost_new[s, q]] < fid:
                    new_lst[s, n2] = lost_new[s, q]
                    n2 += 1
            # duplicates: a tracked and a lost track with 1 - IoU < 0.15: the younger goes (2: dropped)
            a = cuda.local.array(4, np.float32)
            bb = cuda.local.array(4, np.float32)
            for q in range(n1):
                track_xyxy(mean[s, new_trk[s, q]], a)
                for r in range(n2):
                    track_xyxy(mean[s, new_lst[s, r]], bb)
                    if iou_one(a[0], a[1], a[2], a[3], bb[0], bb[1], bb[2], bb[3]) < np.float32(0.15):
                        tp, tq = new_trk[s, q], new_lst[s, r]
                        if frame[s, tp] - start[s, tp] > frame[s, tq] - start[s, tq]:
                            mark[s, tq] = 2
                        else:
                            mark[s, tp] = 2
            ntrk[s] = kept(trk[s], new_trk[s], n1, mark[s])
            nlst[s] = kept(lst[s], new_lst[s], n2, mark[s])
            for t in range(K):
                mark[s, t] = 0
            for q in range(ntrk[s]):
                mark[s, trk[s, q]] = 1
                if act[s, trk[s, q]]:
                    ids[b, idx[s, trk[s, q]]] = tid[s, trk[s, q]]
            for q in range(nlst[s]):
                mark[s, lst[s, q]] = 1
            for t in range(K):
                if not mark[s, t]:
                    st[s, t] = FREE

    _KERNELS["tracker"] = bytetrack_f64
    return bytetrack_f64


def predict(mean, cov, tracked) -> None:
    n = mean.shape[0]
    if n == 0:
        return
    k = _kernels()["predict"]
    k[(n + BLOCK - 1) // BLOCK, BLOCK, numba_stream(mean.device)](numba_array(mean), numba_array(cov),
                                                                  numba_array(tracked))


def update(mean, cov, z, rows) -> None:
    n = rows.shape[0]
    if n == 0:
        return
    k = _kernels()["update"]
    k[(n + BLOCK - 1) // BLOCK, BLOCK, numba_stream(mean.device)](numba_array(mean), numba_array(cov),
                                                                  numba_array(z), numba_array(rows))


def iou_cost(tracks, n_tracks, dets, scores, n_dets, cost, fuse: bool) -> None:
    S, T, D = cost.shape
    if S * T * D == 0:
        return
    b = COST_BLOCK
    grid = (S, (T + b[1] - 1) // b[1], (D + b[2] - 1) // b[2])
    _kernels()["cost"][grid, b, numba_stream(cost.device)](
        numba_array(tracks), numba_array(n_tracks), numba_array(dets), numba_array(scores), numba_array(n_dets),
        numba_array(cost), np.int32(fuse))


def assign(cost, n_tracks, n_dets, match, work: dict, limit: float) -> None:
    S = cost.shape[0]
    if S == 0:
        return
    args = [numba_array(work[k]) for k in LAP_WORK]
    _kernels()["assign"][(S + ASSIGN_BLOCK - 1) // ASSIGN_BLOCK, ASSIGN_BLOCK, numba_stream(cost.device)](
        numba_array(cost), numba_array(n_tracks), numba_array(n_dets), numba_array(match), *args, np.float64(limit))


def track(boxes, scores, counts, order, n_frames, restart, ids, keypoints, state: dict, scratch: dict, cfg) -> None:
    S = order.shape[0]
    if S == 0:
        return
    a = numba_array
    st = [a(state[k]) for k in STATE]
    sc = [a(scratch[k]) for k in SCRATCH]
    _tracker()[(S + ASSIGN_BLOCK - 1) // ASSIGN_BLOCK, ASSIGN_BLOCK, numba_stream(boxes.device)](
        a(boxes), a(scores), a(counts), a(order), a(n_frames), a(restart), a(ids), a(keypoints), *st, *sc,
        np.float32(cfg.track_high_thresh), np.float32(cfg.track_low_thresh), np.float32(cfg.new_track_thresh),
        np.int32(cfg.track_buffer), np.float64(cfg.match_thresh), np.int32(cfg.fuse_score), np.int32(cfg.match == "oks"))



__all__ = ["predict", "update", "iou_cost", "assign", "track"]
