"""Repacks a wheel without the parts a device call does not need, so that it fits beside Ray in the 64 MiB a
call carries: PyNvVideoCodec's wheel holds its FFmpeg source tarball, samples, benchmarks and a build for
CUDA 12 beside the CUDA 13 one (27 MB; slim, 9 MB).

    python experiments/slim_wheel.py .offline/whl/pynvvideocodec-*.whl .offline/whl-ray/ \
        --drop '*.data/*' 'samples/*' 'benchmarks/*' 'PyNvVideoCodec/PyNvVideoCodec_121*'

The RECORD loses the dropped files' lines, so pip installs the rest as it would the whole wheel.
"""
from __future__ import annotations

import argparse
import fnmatch
import zipfile
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel")
    ap.add_argument("out_dir")
    ap.add_argument("--drop", nargs="+", required=True, help="glob patterns of paths inside the wheel")
    a = ap.parse_args(argv)
    src = Path(a.wheel)
    dst = Path(a.out_dir) / src.name
    dst.unlink(missing_ok=True)  # the folder may hold a hard link to the full wheel
    gone = lambda name: any(fnmatch.fnmatch(name, p) for p in a.drop)  # noqa: E731
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            if gone(info.filename):
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not gone(line.split(b",", 1)[0].decode()))
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    print(f"{dst}: {dst.stat().st_size / 1e6:.1f} MB (from {src.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
