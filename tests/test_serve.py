"""``posefuse serve`` as a user meets it: a real server process on a free loopback port (the CPU engine), real
HTTP clients, the thin client (``posefuse run --server``) against a local run frame for frame, a loopback
ffmpeg camera added and removed, the token and the allowed folders, bad requests, a client that goes away
mid-job, SIGTERM, and the status page in a real browser (headless Chromium, where installed)."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import helpers

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")
pytestmark = pytest.mark.slow

CLIP = "one-by-one-person-detection.mp4"
TOKEN = "s3cret"


bench = helpers.load_experiment("serve_bench")  # the server process and the HTTP request of the benchmark


def Server(roots: list, *args, token: str | None = TOKEN):
    """``posefuse serve`` on the CPU in a process of its own, on a free loopback port, ready."""
    return bench.Server(roots, "--device", "cpu", *args, token=token)


def request(url: str, path: str, body=None, method=None, token: str | None = TOKEN, raw: bytes | None = None):
    return bench.request(url, path, body, method, token, raw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    s = Server([helpers.data_dir(), out], "--max-jobs", "2", "--max-request-kb", "4")
    s.out = out
    yield s
    s.stop()


def test_a_job_through_the_thin_client_equals_a_local_run(server, tmp_path, monkeypatch):
    """``posefuse run --server URL`` writes the JSON lines and the report a local run writes, frame for
    frame (the stream names and image ids included)."""
    from posefuse.runners.cli import main

    monkeypatch.chdir(helpers.data_dir())  # a relative source, as a user gives it
    got, rep = tmp_path / "served.jsonl", tmp_path / "served.json"
    assert main(["run", "--server", server.url, "--token", TOKEN, "--source", CLIP, "--max-frames", "12",
                 "--save-json", str(got), "--out", str(rep)]) == 0
    local = tmp_path / "local.jsonl"
    assert main(["run", "--device", "cpu", "--source", CLIP, "--max-frames", "12", "--no-progress",
                 "--save-json", str(local)]) == 0
    assert got.read_text() == local.read_text()
    report = json.loads(rep.read_text())
    assert report["overall"]["results"] == 12 and report["exit_code"] == 0 and not report["interrupted"]
    assert report["streams"][CLIP]["frames_in"] == 12
    ran = report["ran"]  # what ran, as a local run's report says it
    assert ran["server"] and ran["device"] == "cpu" and ran["backend"] == "reference" and ran["precision"] == "fp32"
    assert ran["compile"] == "off" and ran["cuda_graph"] is False
    assert 'stream="job' not in request(server.url, "/metrics")[1]  # a finished job's streams are let go of


@pytest.mark.gpu
def test_on_a_gpu_a_served_job_equals_a_local_run(tmp_path, monkeypatch):
    """A server on the GPU (its defaults: CUDA, fp16, the CUDA graphs) and the thin client: the sample clip's
    first 96 frames give the JSON lines a local GPU run of the same job writes, frame for frame (OpenCV
    decoding on both sides: a job of one clip reads with it by default where the server's live run would
    take NVDEC, whose colour conversion differs)."""
    from posefuse.runners.cli import main

    s = bench.Server([helpers.data_dir(), tmp_path], "--decoder", "cpu", token=TOKEN)
    try:
        monkeypatch.chdir(helpers.data_dir())
        got, rep = tmp_path / "served.jsonl", tmp_path / "served.json"
        served = main(["run", "--server", s.url, "--token", TOKEN, "--source", CLIP, "--max-frames", "96",
                       "--save-json", str(got), "--out", str(rep)])
    finally:
        stopped = s.stop()
    assert served == 0 and stopped == 0
    local = tmp_path / "local.jsonl"
    assert main(["run", "--runner", "dynamic", "--decoder", "cpu", "--source", CLIP, "--max-frames", "96",
                 "--no-progress", "--save-json", str(local)]) == 0
    ran = json.loads(rep.read_text())["ran"]
    assert ran["device"].startswith("cuda") and ran["precision"] == "fp16" and ran["cuda_graph"] is True
    lines = got.read_text().splitlines()
    assert len(lines) == 96 and lines == local.read_text().splitlines()


def test_a_job_writes_on_the_server_where_it_may(server):
    path = server.out / "poses.jsonl"
    status, text = request(server.url, "/jobs", {"sources": [helpers.data_path(CLIP)], "max_frames": 3,
                                                 "save_json": str(path), "out": str(server.out / "r.json")})
    assert status == 200
    lines = [json.loads(x) for x in text.splitlines()] if isinstance(text, str) else [text]
    assert [x["frame"] for x in lines[:-1]] == [0, 1, 2] and "report" in lines[-1]
    assert len(path.read_text().splitlines()) == 3
    assert json.loads((server.out / "r.json").read_text())["overall"]["results"] == 3


@pytest.mark.parametrize("body, status, field", [
    ({"sources": ["/etc/hostname"]}, 403, "sources[0]"),
    ({"sources": [CLIP], "save_json": "/etc/poses.jsonl"}, 403, "save_json"),
    ({"sources": ["file:///etc/hostname"]}, 403, "sources[0]"),
    ({"sources": []}, 400, "sources"),
    ({"sauces": [CLIP]}, 400, "sauces"),
    ({"sources": "clip.mp4"}, 400, "sources"),
    ({"sources": [CLIP], "max_frames": 0}, 400, "max_frames"),
    ({"sources": [CLIP], "max_frames": True}, 400, "max_frames"),
    ([1, 2], 400, "body"),
])
def test_bad_job_requests_are_4xx_naming_the_field(server, body, status, field):
    body = json.loads(json.dumps(body).replace(f'"{CLIP}"', json.dumps(helpers.data_path(CLIP))))
    got, answer = request(server.url, "/jobs", body)
    assert got == status and answer["error"].startswith(f"{field}:"), answer


def test_a_file_url_inside_an_allowed_root_is_read_as_a_local_run_reads_it(server, tmp_path):
    """A source given as a file:// URL is the file it names: the roots limit its path, and the job reads it."""
    from posefuse.runners.cli import main

    url = "file://" + helpers.data_path(CLIP)
    assert main(["run", "--server", server.url, "--token", TOKEN, "--source", url, "--max-frames", "2",
                 "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["overall"]["results"] == 2


def test_a_job_whose_source_cannot_be_read_reports_it_and_the_client_exits_1(server, tmp_path, capsys):
    from posefuse.runners.cli import main

    missing = str(server.out / "missing.mp4")  # inside an allowed folder, but not there
    capsys.readouterr()
    assert main(["run", "--server", server.url, "--token", TOKEN, "--source", missing, helpers.data_path(CLIP),
                 "--max-frames", "2", "--out", str(tmp_path / "r.json")]) == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["failed"]) == [missing] and "no such file" in report["failed"][missing]
    assert report["overall"]["results"] == 2 and report["exit_code"] == 1
    assert f"posefuse: {missing}: " in capsys.readouterr().err


def test_token_size_limit_and_unknown_stream(server):
    for token in (None, "wrong"):
        status, answer = request(server.url, "/health", token=token)
        assert status == 401 and answer["error"].startswith("token:")
    status, answer = request(server.url, "/jobs", raw=b"{not json", method="POST")
    assert status == 400 and answer["error"].startswith("body:")
    status, answer = request(server.url, "/jobs", raw=b'{"sources": ["' + b"x" * 8000 + b'"]}', method="POST")
    assert status == 413 and answer["error"].startswith("body:")
    status, answer = request(server.url, "/streams/nope", method="DELETE")
    assert status == 404 and answer["error"].startswith("name:")
    assert request(server.url, "/health")[0] == 200  # the server goes on


def test_a_client_that_goes_away_mid_job_leaves_the_server_going(server):
    """A job whose client reads one line and hangs up is cancelled; the next job runs."""
    host, port = server.url.split("//")[1].split(":")
    body = json.dumps({"sources": [helpers.data_path(CLIP)], "max_frames": 300}).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert b"200 OK" in s.recv(4096)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        jobs = request(server.url, "/jobs")[1]["jobs"]
        if jobs and jobs[-1]["state"] == "cancelled":
            break
        time.sleep(0.2)
    assert jobs[-1]["state"] == "cancelled"
    status, text = request(server.url, "/jobs", {"sources": [helpers.data_path(CLIP)], "max_frames": 2})
    assert status == 200 and json.loads(text.splitlines()[-1])["report"]["overall"]["results"] == 2


def test_a_camera_joins_and_leaves_and_the_metrics_count_it(server):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (.ci/run installs it)")
    cameras = helpers.load_experiment("cameras")
    cams = cameras.Cameras(helpers.data_path(CLIP), n=1, fps=10.0).start()
    try:
        status, answer = request(server.url, "/streams", {"source": cams.urls[0], "name": "cam"}, method="POST")
        assert status == 201 and answer == {"name": "cam"}
        assert request(server.url, "/streams", {"source": cams.urls[0], "name": "cam"}, method="POST")[0] == 409
        t0, cam = time.monotonic(), {}
        while time.monotonic() - t0 < 60:
            cam = {s["name"]: s for s in request(server.url, "/streams")[1]["streams"]}["cam"]
            if cam["results"] >= 10:
                break
            time.sleep(0.3)
        assert cam["state"] == "running" and cam["results"] >= 10 and cam["frames_per_s"] > 0
        waits = request(server.url, "/streams")[1]["waits_ms"]  # where the run's frames waited before the GPU
        assert set(waits) == {"intake", "queue", "batch"}
        assert all(0 <= w["p50"] <= w["p99"] <= w["max"] for w in waits.values())
        metrics = request(server.url, "/metrics")[1]
        assert 'posefuse_results_total{stream="cam"}' in metrics and "posefuse_ready 1.0" in metrics
        assert 'posefuse_wait_ms{quantile="0.99",stage="queue"}' in metrics
        values = _samples(metrics)
        # the camera's latency histogram: cumulative, its +Inf bucket and count its results (as /metrics saw them)
        buckets = [v for k, v in values.items()
                   if k.startswith("posefuse_latency_seconds_bucket{") and 'stream="cam"' in k]
        assert len(buckets) == 12 and buckets == sorted(buckets)
        cam_results = values['posefuse_results_total{stream="cam"}']
        assert values['posefuse_latency_seconds_bucket{le="+Inf",stream="cam"}'] == cam_results
        assert values['posefuse_latency_seconds_count{stream="cam"}'] == cam_results
        assert 0 < values['posefuse_latency_seconds_sum{stream="cam"}'] < 60 * cam_results
        # batches: every result ran in one (other streams' jobs may have run before on this server)
        assert values["posefuse_batch_frames_sum"] >= cam_results and values["posefuse_batch_frames_count"] >= 1
        assert values['posefuse_batch_frames_bucket{le="+Inf"}'] == values["posefuse_batch_frames_count"]
        assert {'posefuse_queued_frames{stage="queue"}', 'posefuse_queued_frames{stage="batcher"}'} <= set(values)
        # the camera is read in an OpenCV decode host
        assert values['posefuse_decode_hosts{device="cpu"}'] >= 1
        assert values['posefuse_decode_host_streams{device="cpu"}'] >= 1
        assert request(server.url, "/streams/cam", method="DELETE")[0] == 200
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            cam = {s["name"]: s for s in request(server.url, "/streams")[1]["streams"]}["cam"]
            if cam["state"] == "ended":
                break
            time.sleep(0.2)
        assert cam["state"] == "ended" and cam["in_flight"] == 0
    finally:
        cams.stop()


def _samples(text: str) -> dict:
    """{'name{labels}': value} of a Prometheus text page (labels as the page writes them)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_the_status_page_in_a_browser_shows_a_stream_and_its_counts_rising(server, tmp_path):
    """Headless Chromium (Debian's package, which .ci/run installs) loads the page, runs its script and
    shows the stream's row; a later load (within a minute) shows more results."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    assert request(server.url, "/streams", {"source": helpers.data_path(CLIP), "name": "file",
                                            "max_frames": 200}, method="POST")[0] == 201

    def results_shown() -> int:
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                              "--virtual-time-budget=3000", "--dump-dom", f"{server.url}/?token={TOKEN}"],
                             capture_output=True, text=True, timeout=120).stdout
        row = dom[dom.index('data-stream="file"'):]
        return int(row.split('class="results">')[1].split("<")[0])

    first = later = results_shown()
    t0 = time.monotonic()
    while later <= first and time.monotonic() - t0 < 60:  # a loaded 2-core CI machine may run a frame a second
        time.sleep(1)
        later = results_shown()
    assert later > first >= 0


def test_sigterm_drains_a_job_to_its_report_and_exits_0(tmp_path):
    """SIGTERM mid-job: frames in flight finish, the job's response ends with its report (interrupted),
    every frame read is a result, the process exits 0."""
    s = Server([helpers.data_dir(), tmp_path], token=None)
    url = s.url
    req = urllib.request.Request(url + "/jobs", data=json.dumps({"sources": [helpers.data_path(CLIP)]}).encode(),
                                 headers={"Content-Type": "application/json"})
    resp = urllib.request.urlopen(req, timeout=120)
    first = resp.readline()
    assert json.loads(first)["frame"] == 0
    s.proc.send_signal(signal.SIGTERM)
    lines = [first] + resp.readlines()
    report = json.loads(lines[-1])["report"]
    assert report["interrupted"] and report["overall"]["results"] == len(lines) - 1
    assert report["overall"]["frames_in"] == report["overall"]["results"]
    assert s.proc.wait(60) == 0


def test_the_thin_client_imports_no_torch_and_names_a_server_that_is_down():
    code = ("import sys; from posefuse.runners.cli import main; "
            "rc = main(['run', '--server', 'http://127.0.0.1:9', '--source', 'x.mp4']); "
            "print(rc, 'torch' in sys.modules, 'numpy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["1", "False", "False"], r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == ["posefuse: --server: cannot reach http://127.0.0.1:9 ([Errno 111] "
                                             "Connection refused)"]


def test_a_model_the_service_cannot_run_or_a_bad_port_is_one_line_exit_2(tmp_path):
    import torch
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

    det = tmp_path / "detect.pt"
    torch.save({"model": DetectionModel("yolo11n.yaml", nc=1, verbose=False), "train_args": {"task": "detect"},
                "version": ultralytics.__version__}, det)
    for args, flag in ((["--model", str(det)], "--model"), (["--port", "70000"], "--port")):
        r = subprocess.run([sys.executable, "-m", "posefuse.runners.cli", "serve", "--device", "cpu", "--port", "0",
                            "--allow-root", str(tmp_path), *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.strip().startswith(f"posefuse: {flag}: "), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
