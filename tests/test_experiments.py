"""CPU smoke tests of the experiment scripts, so they do not rot between GPU sessions."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


def test_accuracy_script_on_a_few_frames(tmp_path):
    out = tmp_path / "acc.json"
    r = subprocess.run([sys.executable, "experiments/accuracy.py", "--device", "cpu", "--max-frames", "2", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    s = rep["precisions"]["fp32"]["all"]
    assert s["frames"] == 2 + 2 + 2 + 2 and s["matched_fraction"] == 1.0 and all(rep["precisions"]["fp32"]["met"].values())


def test_run_notebook_executes_cells_and_reports_errors(tmp_path):
    import run_notebook

    def nb(*cells):
        return {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                           "source": [c]} for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

    p = tmp_path / "ok.ipynb"
    p.write_text(json.dumps(nb("x = 21", "print(x * 2)\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])")))
    assert run_notebook.run(str(p)) == 0
    cells = json.loads(p.read_text())["cells"]
    assert cells[1]["outputs"][0]["text"] == ["42\n"] and "image/png" in cells[1]["outputs"][1]["data"]
    p.write_text(json.dumps(nb("1 / 0", "print('not reached')")))
    assert run_notebook.run(str(p)) == 1
    cells = json.loads(p.read_text())["cells"]
    assert cells[0]["outputs"][0]["ename"] == "ZeroDivisionError" and cells[1]["outputs"] == []


def test_reports_reproduce_the_recorded_targets():
    """bench_report's target checks, re-run on the recorded rows, give the recorded verdicts; the README
    generator builds its section from results/."""
    import bench_report
    import readme_results

    for name in ("kernels", "pipeline"):
        run = json.loads((ROOT / "results" / f"{name}.json").read_text())["runs"][-1]
        again = bench_report.evaluate(name, run["rows"])
        assert [(t["target"], t["met"]) for t in again] == [(t["target"], t["met"]) for t in run["targets"]]
        assert bench_report.markdown(name, [run]).startswith(f"# {name}: measured results")
    sec = readme_results.section()
    assert sec.startswith(readme_results.BEGIN) and sec.endswith(readme_results.END) and "Fused pipeline" in sec
