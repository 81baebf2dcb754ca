"""Result sinks of a run: poses as JSON lines, COCO keypoint results, an annotated video. Every path is
checked before the run starts (:func:`check_paths`), so a bad path never costs a run.

JSON lines (``save_json``), one object per frame, per stream in frame order::

    {"stream": "clip.mp4", "frame": 12, "image_id": 12, "timestamp": 0.4, "file": null,
     "height": 432, "width": 768,
     "poses": [{"box": [x1, y1, x2, y2], "score": 0.91, "keypoints": [[x, y, visibility], ...17]}]}

``stream``: the source's name ('spec#k' when a source is repeated); ``frame``: the frame's index in it;
``image_id``: the frame's id in the COCO results (stream position * 1,000,000 + frame index);
``timestamp``: seconds from the source's start (null if unknown); ``file``: the image file (image
sources, else null); box and keypoints in original-image pixels, keypoints in COCO-17 order; with
tracking (``track``), each pose also has ``track_id`` (-1: no confirmed track yet), in COCO too.

COCO (``save_coco``): a JSON list of keypoint results, one per pose: ``image_id``, ``category_id`` 1
(person), ``bbox`` [x, y, w, h], ``keypoints`` (51 values: x, y, visibility per keypoint), ``score``;
what ``pycocotools.COCO.loadRes`` reads.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import cv2
import numpy as np

from .config import ConfigError
from .events import FrameResult

IMAGE_ID_STRIDE = 1_000_000  # image_id = stream position * this + frame index
FOURCC = "mp4v"

# COCO-17 skeleton (pairs of keypoint indices), as Ultralytics draws it
SKELETON = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
            (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]


def _ids(res) -> list:
    """Each pose's track id (None where the run does not track)."""
    return [None] * len(res.scores) if res.track_ids is None else list(res.track_ids)


def json_record(r: FrameResult, image_id: int, stream: str | None = None) -> dict:
    """A frame's JSON line (the module docstring's format) as a dict; ``stream``: the name it is written
    under (default ``r.stream``)."""
    p = r.poses
    return {"stream": r.stream if stream is None else stream, "frame": r.index, "image_id": image_id,
            "timestamp": None if r.timestamp is None else round(float(r.timestamp), 4), "file": r.file,
            "height": int(r.size[0]), "width": int(r.size[1]),
            "poses": [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4),
                       "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(v), 4)] for x, y, v in k],
                       **({} if tid is None else {"track_id": int(tid)})}
                      for b, s, k, tid in zip(p.boxes, p.scores, p.keypoints, _ids(p))]}


def draw(image: np.ndarray, res, kpt_thr: float = 0.5) -> np.ndarray:
    """``image`` with ``res``'s boxes, scores (and track ids) and skeletons drawn (a copy)."""
    out = image.copy()
    for box, score, kp, tid in zip(res.boxes, res.scores, res.keypoints, _ids(res)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 255), 2)
        label = f"{score:.2f}" if tid is None or tid < 0 else f"id {tid} {score:.2f}"
        cv2.putText(out, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 255), 1)
        for a, b in SKELETON:
            if kp[a, 2] > kpt_thr and kp[b, 2] > kpt_thr:
                cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), (255, 128, 0), 2)
        for x, y, v in kp:
            if v > kpt_thr:
                cv2.circle(out, (int(x), int(y)), 3, (0, 255, 0), -1)
    return out


def video_paths(path: str, n_streams: int) -> list[str]:
    """The annotated video of each stream: ``path`` itself for one stream, else 'stem_k.ext'."""
    p = Path(path)
    return [str(p)] if n_streams == 1 else [str(p.with_name(f"{p.stem}_{k}{p.suffix}")) for k in range(n_streams)]


def _check_writable(option: str, path: str):
    p = Path(path)
    if p.is_dir():
        raise ConfigError(option, f"{path} is a folder, expected a file path")
    if not p.parent.is_dir():
        raise ConfigError(option, f"cannot write {path}: the folder {p.parent} does not exist")
    existed = p.exists()
    try:
        with open(p, "a"):
            pass
    except OSError as e:
        raise ConfigError(option, f"cannot write {path} ({e.strerror or e})") from None
    if not existed:
        os.remove(p)


def check_paths(cfg):
    """Every output path of ``cfg`` can be written, and the video writer can write ``save_video``'s format;
    raises ConfigError naming the option otherwise."""
    for option in ("out", "save_json", "save_coco"):
        if getattr(cfg, option):
            _check_writable(option, getattr(cfg, option))
    if cfg.save_video:
        _check_writable("save_video", cfg.save_video)
        probe = str(Path(cfg.save_video).with_name(f".posefuse-probe-{os.getpid()}{Path(cfg.save_video).suffix}"))
        w = cv2.VideoWriter(probe, cv2.VideoWriter_fourcc(*FOURCC), 30.0, (64, 64))
        ok = w.isOpened()
        w.release()
        if os.path.exists(probe):
            os.remove(probe)
        if not ok:
            raise ConfigError("save_video", f"OpenCV cannot write {FOURCC} video to {cfg.save_video!r} "
                                            "(use .mp4, .avi or .mov)")


@contextlib.contextmanager
def _naming(option: str, path: str):
    """An OSError inside is raised again as one naming the output: '<option> <path>: <why>'."""
    try:
        yield
    except OSError as e:
        raise OSError(f"{option} {path}: {e.strerror or e}") from e


class Outputs:
    """The sinks of one run, fed FrameResults (``__call__``). ``streams``: [(spec, name)] in order;
    ``fps``: {stream name: frame rate} for the videos (30 where unknown)."""

    def __init__(self, cfg, streams: list[tuple]):
        self.position = {name: k for k, (_, name) in enumerate(streams)}
        self._next = len(streams)  # the position of the next stream that joins
        self.jsonl = open(cfg.save_json, "w") if cfg.save_json else None
        self.coco_path = cfg.save_coco
        self.coco: list = []
        self._video_base = cfg.save_video
        self.video_of = dict(zip((n for _, n in streams), video_paths(cfg.save_video, len(streams)))) \
            if cfg.save_video else {}
        self.fps: dict = {}
        self.writers: dict = {}
        self.paths: list[str] = []
        self.lost_video_frames = 0

    def add_stream(self, name: str, fps: float | None):
        """A stream that joined the run while it ran (RunControl.add_source): the next position (a
        forgotten stream's is not given out again)."""
        k = self.position[name] = self._next
        self._next += 1
        self.fps[name] = fps
        if self._video_base:
            self.video_of[name] = video_paths(self._video_base, max(2, k + 1))[k]

    def forget(self, names):
        """Finished streams that wrote no video: their positions and rates are dropped."""
        for n in names:
            if n not in self.video_of:
                self.position.pop(n, None)
                self.fps.pop(n, None)

    def __call__(self, r: FrameResult):
        """Writes ``r`` to each output; an output that fails raises OSError naming its option and path."""
        image_id = self.position.get(r.stream, 0) * IMAGE_ID_STRIDE + r.index
        p = r.poses
        if self.jsonl is not None:
            with _naming("save_json", self.jsonl.name):
                self._write_json(r, image_id, p)
        if self.coco_path:
            for b, s, k, tid in zip(p.boxes, p.scores, p.keypoints, _ids(p)):
                x1, y1, x2, y2 = (float(v) for v in b)
                self.coco.append({"image_id": image_id, "category_id": 1,
                                  "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                  "keypoints": [round(float(v), 3) for v in np.asarray(k).reshape(-1)],
                                  "score": round(float(s), 5), **({} if tid is None else {"track_id": int(tid)})})
        if self.video_of:
            if r.image is None:  # validated against: NVDEC and multigpu runs have no host images
                self.lost_video_frames += 1
                return
            with _naming("save_video", self.video_of[r.stream]):
                self._writer(r.stream, r.image.shape).write(draw(r.image, p))

    def _write_json(self, r: FrameResult, image_id: int, p):
        self.jsonl.write(json.dumps(json_record(r, image_id)) + "\n")

    def _writer(self, stream: str, shape):
        w = self.writers.get(stream)
        if w is None:
            path = self.video_of[stream]
            w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*FOURCC), self.fps.get(stream) or 30.0,
                                (shape[1], shape[0]))
            if not w.isOpened():
                raise OSError("OpenCV could not open it for writing")
            self.writers[stream] = w
            self.paths.append(path)
        return w

    def close(self) -> dict:
        """Closes every output; returns {'<option>': error} for those that could not be written (each is still
        closed), so a failing output leaves the others and the report."""
        failed = {}
        for option, path, fn in (("save_json", self.jsonl and self.jsonl.name, self.jsonl and self.jsonl.close),
                                 ("save_coco", self.coco_path,
                                  self.coco_path and (lambda: Path(self.coco_path).write_text(json.dumps(self.coco))))):
            if fn:
                try:
                    with _naming(option, path):
                        fn()
                except OSError as e:
                    failed[f"<{option}>"] = str(e)
        for w in self.writers.values():
            w.release()
        return failed
