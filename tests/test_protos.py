"""The proto package is lint-clean (buf) and the committed generated code is what `make proto` makes."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lookalike import protogen


def test_buf_lint_is_clean(tmp_path: Path) -> None:
    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    result = subprocess.run(
        [buf, "lint"], cwd=protogen.PROTO_ROOT, capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    committed = protogen.GENERATED_DIR
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"run `make proto`: {mismatch or errors} differ"


def test_resource_oriented_public_api() -> None:
    from lookalike.v1 import collection_service_pb2, retriever_service_pb2

    fields = collection_service_pb2.CreateCollectionRequest.DESCRIPTOR.fields_by_name
    assert {"parent", "collection_id"} <= set(fields)
    assert "name" in retriever_service_pb2.Retriever.DESCRIPTOR.fields_by_name
