"""Generates the Python gRPC code for protos/lookalike/v1 into libs/lookalike/v1 (`make proto`).

The generated package is `lookalike.v1`, matching the proto package, so generated imports such as
`from lookalike.v1 import types_pb2` resolve inside this library. Never edit the output by hand.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
OUTPUT_ROOT = REPO_ROOT / "libs"
GENERATED_DIR = OUTPUT_ROOT / "lookalike" / "v1"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "lookalike" / "v1").glob("*.proto"))


def generate(output_root: Path = OUTPUT_ROOT) -> Path:
    """Regenerates the package under output_root/lookalike/v1 and returns that directory."""
    target = output_root / "lookalike" / "v1"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (target / "__init__.py").write_text('"""Generated from protos/lookalike/v1 by `make proto`; do not edit."""\n')
    return target


def lint() -> None:
    buf = shutil.which("buf") or shutil.which("buf", path=str(Path(sys.executable).parent))
    if buf is None:
        raise SystemExit("buf is not installed (pip install buf-bin)")
    subprocess.run([str(Path(buf).resolve()), "lint"], cwd=PROTO_ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-lint", action="store_true")
    args = parser.parse_args()
    if not args.no_lint:
        lint()
    print(f"generated {generate()}", file=sys.stderr)


if __name__ == "__main__":
    main()
