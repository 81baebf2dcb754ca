"""Execute a notebook's code cells in one namespace and save it with its outputs (stdout, errors, figures).

    python experiments/run_notebook.py experiments/compare_kernels.ipynb [--out executed.ipynb]

A minimal in-process executor for machines without Jupyter (the GPU machine has none and no package
index): each code cell runs in order, like a kernel would run it; printed text becomes a stream output,
every open matplotlib figure a PNG display output, an exception an error output (and exit status 1).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _figures():
    if "matplotlib.pyplot" not in sys.modules:
        return []
    import matplotlib.pyplot as plt

    outs = []
    for num in plt.get_fignums():
        buf = io.BytesIO()
        plt.figure(num).savefig(buf, format="png", dpi=90, bbox_inches="tight")
        outs.append({"output_type": "display_data", "metadata": {},
                     "data": {"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": ["<Figure>"]}})
    plt.close("all")
    return outs


def run(path: str, out: str | None = None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = json.loads(Path(path).read_text())
    ns = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(ROOT)
    status, count = 0, 0
    try:
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            count += 1
            src = "".join(cell["source"])
            buf = io.StringIO()
            outputs = []
            try:
                with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                    exec(compile(src, f"<cell {count}>", "exec"), ns)
            except Exception as e:
                status = 1
                outputs.append({"output_type": "error", "ename": type(e).__name__, "evalue": str(e),
                                "traceback": traceback.format_exc().splitlines()})
            if buf.getvalue():
                outputs.insert(0, {"output_type": "stream", "name": "stdout", "text": buf.getvalue().splitlines(True)})
            outputs += _figures()
            cell["outputs"], cell["execution_count"] = outputs, count
            sys.stdout.write(buf.getvalue())
            if status:
                print(f"cell {count} failed:\n" + "\n".join(outputs[-1].get("traceback", [])), file=sys.stderr)
                break
    finally:
        os.chdir(cwd)
    Path(out or path).write_text(json.dumps(nb, indent=1))
    return status


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("notebook")
    ap.add_argument("--out")
    a = ap.parse_args()
    sys.exit(run(a.notebook, a.out))
