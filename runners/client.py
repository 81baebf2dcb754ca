"""``posefuse run --server URL``: a job sent to a warm ``posefuse serve`` (runners/serve.py). Imports only the
standard library (no torch): the command's wall is the request's. The poses come back as the JSON lines a
local run writes (the same stream names and image ids) and are written to ``--save-json``; the job's
report to ``--out``."""
from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

# the run options a job sends; any other option given on the command line is refused with --server
JOB_OPTIONS = ("source", "max_frames", "save_json", "out")


def run_job(server: str, sources: list, max_frames: int | None = None, save_json: str | None = None,
            out: str | None = None, token: str | None = None, timeout: float = 3600.0) -> int:
    """Send the job, write its outputs here; returns the exit code (0; 1 a source failed or the server is
    unreachable or failed; 2 the server refused the request)."""
    specs = [s if s is None or "://" in s else os.path.abspath(s) for s in sources]  # the server's folder is not ours
    body = {"sources": specs, "names": list(sources)}
    if max_frames is not None:
        body["max_frames"] = max_frames
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(server.rstrip("/") + "/jobs", data=json.dumps(body).encode(), headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        try:
            why = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            why = e.reason
        print(f"posefuse: the server refused the job ({e.code}): {why}", file=sys.stderr)
        return 2 if 400 <= e.code < 500 else 1
    except (urllib.error.URLError, OSError) as e:
        print(f"posefuse: --server: cannot reach {server} ({getattr(e, 'reason', e)})", file=sys.stderr)
        return 1
    report = None
    jsonl = open(save_json, "w") if save_json else None
    try:
        with resp:
            for raw in resp:
                line = raw.decode()
                rec = json.loads(line)
                if "report" in rec:
                    report = rec["report"]
                elif jsonl is not None:
                    jsonl.write(line)
    except (OSError, ValueError) as e:
        print(f"posefuse: --server: the job's stream broke off ({e})", file=sys.stderr)
        return 1
    finally:
        if jsonl is not None:
            jsonl.close()
    if report is None:
        print("posefuse: --server: the job ended without its report", file=sys.stderr)
        return 1
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1)
    if report["interrupted"]:
        print("posefuse: the server stopped during the job: the frames it had read are in the outputs, the rest "
              "was not read", file=sys.stderr)
    for name, why in report["failed"].items():
        print(f"posefuse: {name}: {why.splitlines()[0]}", file=sys.stderr)
    for name, r in report["streams"].items():
        print(f"[{name}] {r['results']}/{r['frames_in']} frames, {r['detections']} poses, drops "
              f"{sum(r['drops'].values())}")
    o = report["overall"]
    print(f"[all] {o['results']}/{o['frames_in']} frames in {o['wall_s']:.2f} s on the server "
          f"({o['frames_per_s'] or 0:,.1f} frames/s), {o['detections']} poses; ran {report['ran']}")
    return 1 if report["interrupted"] else report["exit_code"]
