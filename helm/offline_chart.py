"""Copies a chart without its declared `dependencies:` so that it renders offline.

    python helm/offline_chart.py helm/lookalike build/deploy/chart   # -> build/deploy/chart/lookalike

helm refuses to lint --strict or template a chart whose Chart.yaml names dependencies that are not in
its charts/ directory, even when their `condition:` disables them. lookalike's upstream charts
(Milvus, MinIO, NATS) are optional and not vendored, so `make helm-template` and tests/test_deploy.py
render this copy. Everything else (templates, values, values.schema.json) is the chart as it is.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path


def strip_dependencies(chart_yaml: str) -> str:
    """Chart.yaml text without its top-level `dependencies:` block (comments inside it included)."""
    out: list[str] = []
    skipping = False
    for line in chart_yaml.splitlines(keepends=True):
        if re.match(r"dependencies:\s*(#.*)?$", line):
            skipping = True
            continue
        if skipping and (not line.strip() or line[0] in " \t-#"):
            continue
        skipping = False
        out.append(line)
    return "".join(out)


def stage(chart: Path, dest_dir: Path) -> Path:
    target = dest_dir / chart.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(chart, target, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = target / "Chart.yaml"
    stripped = strip_dependencies(chart_yaml.read_text())
    if re.search(r"^dependencies:", stripped, re.M):
        raise SystemExit(f"{chart_yaml}: could not remove the dependencies block")
    chart_yaml.write_text(stripped)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(stage(Path(sys.argv[1]), Path(sys.argv[2])))
