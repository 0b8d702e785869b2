"""Deployment artefacts: docker/Dockerfile (hadolint), the kustomize overlays k8s/overlays/{dev,prod}
and the Helm chart helm/lookalike (helm lint, helm template with values-dev/values-prod), every
rendering validated against the Kubernetes API schemas by `kubernetes-validate --strict`, then
checked for what the mesh needs (gRPC probes, non-root read-only pods, only the gateway exposed, ...).

The tools are found in .tools/bin (`make deploy-tools`), else on PATH. When one is missing the
`tools` fixture runs `make deploy-tools` itself and fails, never skips, if that does not bring it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = ROOT / ".tools" / "bin"
TOOL_NAMES = ("hadolint", "kubectl", "kubernetes-validate", "helm")
K8S_VERSION = "1.35.0"
CHART = ROOT / "helm" / "lookalike"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

COMPONENTS = {"gateway", "ingest", "ingest-worker", "encoder", "search", "rerank"}
WITH_SERVICE = COMPONENTS - {"ingest-worker"}
INTERNAL = WITH_SERVICE - {"gateway"}
AUTOSCALED = {"encoder", "search", "ingest-worker"}
USES_S3 = {"gateway", "ingest", "ingest-worker", "rerank"}
GRPC_PORT = 50051
METRICS_PORT = 9090


# ---- tools ----------------------------------------------------------------------------------------


def _usable(name: str, path: str) -> bool:
    """kubectl must bring kustomize v5 (an old distribution kubectl does not)."""
    if name != "kubectl":
        return True
    proc = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    try:
        version = json.loads(proc.stdout).get("kustomizeVersion", "v0")
    except json.JSONDecodeError:
        return False
    return int(re.match(r"v?(\d+)", version).group(1)) >= 5


def _find_tools() -> dict[str, str]:
    found = {}
    for name in TOOL_NAMES:
        local = TOOLS_BIN / name
        candidates = [str(local)] if local.is_file() and os.access(local, os.X_OK) else []
        if path := shutil.which(name):
            candidates.append(path)
        for candidate in candidates:
            if _usable(name, candidate):
                found[name] = candidate
                break
    return found


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    found = _find_tools()
    missing = [n for n in TOOL_NAMES if n not in found]
    if missing:
        make = shutil.which("make")
        if make is None:
            pytest.fail(f"missing {missing} and no `make` to run `make deploy-tools`")
        proc = subprocess.run(
            [make, "-C", str(ROOT), "deploy-tools"], capture_output=True, text=True, timeout=900
        )
        if proc.returncode != 0:
            pytest.fail(f"`make deploy-tools` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        found = _find_tools()
        missing = [n for n in TOOL_NAMES if n not in found]
        if missing:
            pytest.fail(f"`make deploy-tools` ran but {missing} are in neither {TOOLS_BIN} nor PATH")
    return found


@pytest.fixture(scope="session")
def tool_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm keeps config and caches under HOME: give it its own writable place."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def validate(tools: dict[str, str], manifests: str) -> None:
    """kubernetes-validate --strict: every object against the API schema, unknown fields rejected."""
    ok(run([tools["kubernetes-validate"], "--strict", "--quiet", "-k", K8S_VERSION, "-"], stdin=manifests))


def load_docs(tools: dict[str, str], text: str) -> list[dict[str, Any]]:
    """The YAML documents as Python objects (PyYAML here, else the one beside kubernetes-validate)."""
    try:
        import yaml
    except ImportError:
        shebang = Path(tools["kubernetes-validate"]).resolve().read_text(errors="replace").splitlines()[0]
        python = shebang.removeprefix("#!").strip() if shebang.startswith("#!") else sys.executable
        code = "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)"
        return [d for d in json.loads(ok(run([python, "-c", code], stdin=text))) if d]
    return [d for d in yaml.safe_load_all(text) if d]


def _load_module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- what every rendering must satisfy -------------------------------------------------------------


def _component(obj: dict[str, Any]) -> str:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def check_mesh(docs: list[dict[str, Any]], public_gateway: bool) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {_component(d): d for d in by_kind["Deployment"] if _component(d) in COMPONENTS}
    assert set(deployments) == COMPONENTS

    configmaps = {c["metadata"]["name"]: c for c in by_kind["ConfigMap"]}
    services = by_kind["Service"]
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}

    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert _selects(spec["selector"], pod_labels[name])
        pod = spec["template"]["spec"]
        annotations = spec["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(METRICS_PORT), name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        (container,) = pod["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}, name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == GRPC_PORT, (name, probe)
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), (name, bound)
        volumes = {v["name"]: v for v in pod["volumes"]}
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]], name
        refs = container["envFrom"]
        assert any(r.get("configMapRef", {}).get("name") in configmaps for r in refs), name
        assert any("secretRef" in r for r in refs) == (name in USES_S3), name
        if name in AUTOSCALED:
            assert "replicas" not in spec, f"{name}: the HPA owns its replica count"

    # only the gateway is exposed: ClusterIP for all, plus (prod) one LoadBalancer on the gateway pods
    for component in WITH_SERVICE:
        cluster_ip = [
            s for s in services
            if s["spec"].get("type", "ClusterIP") == "ClusterIP" and _selects({"matchLabels": s["spec"]["selector"]}, pod_labels[component])
        ]
        assert len(cluster_ip) == 1, component
        assert [p["port"] for p in cluster_ip[0]["spec"]["ports"]] == [GRPC_PORT], component
    exposed = [s for s in services if s["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert all(s["spec"]["type"] == "LoadBalancer" for s in exposed)
    assert len(exposed) == (1 if public_gateway else 0)
    for s in exposed:
        selected = {c for c, labels in pod_labels.items() if _selects({"matchLabels": s["spec"]["selector"]}, labels)}
        assert selected == {"gateway"}

    # the addresses in the ConfigMap are the Services' names
    (config,) = [c["data"] for c in configmaps.values() if "LOOKALIKE_ENCODER_ADDR" in c["data"]]
    service_names = {s["metadata"]["name"] for s in services}
    for component in WITH_SERVICE:
        host, port = config[f"LOOKALIKE_{component.upper()}_ADDR"].rsplit(":", 1)
        assert host in service_names and int(port) == GRPC_PORT, component
    assert config["LOOKALIKE_LISTEN_ADDR"] == f"0.0.0.0:{GRPC_PORT}"
    assert int(config["LOOKALIKE_METRICS_PORT"]) == METRICS_PORT
    for key in ("LOOKALIKE_MILVUS_URI", "LOOKALIKE_S3_ENDPOINT", "LOOKALIKE_NATS_URL"):
        assert config[key], key
    assert not (set(config) & {"LOOKALIKE_S3_ACCESS_KEY", "LOOKALIKE_S3_SECRET_KEY"}), "credentials belong in the Secret"

    hpas = by_kind["HorizontalPodAutoscaler"]
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas}
    assert targets == {deployments[c]["metadata"]["name"] for c in AUTOSCALED}
    for h in hpas:
        assert 1 <= h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"]

    pdbs = by_kind["PodDisruptionBudget"]
    for component in COMPONENTS:
        assert any(_selects(p["spec"]["selector"], pod_labels[component]) for p in pdbs), component

    # NetworkPolicies: every pod is selected by an ingress policy (so unlisted traffic is denied);
    # the internal services' gRPC port admits only pods of the mesh, never other namespaces or IPs.
    policies = by_kind["NetworkPolicy"]
    for component, labels in pod_labels.items():
        assert any(_selects(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"]["policyTypes"] for p in policies), component
    mesh_pods = list(pod_labels.values())
    for policy in policies:
        internal = [c for c in INTERNAL if _selects(policy["spec"]["podSelector"], pod_labels[c])]
        for rule in policy["spec"].get("ingress", []):
            rule_ports = {p.get("port") for p in rule.get("ports", [])}
            if not internal or not rule_ports & {"grpc", GRPC_PORT}:
                continue
            peers = rule.get("from")
            assert peers, f"{policy['metadata']['name']}: {internal} open to everyone"
            for peer in peers:
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: {internal} reachable by {peer}"
                assert any(_selects(peer["podSelector"], labels) for labels in mesh_pods)
    gateway_open = [
        rule for p in policies if _selects(p["spec"]["podSelector"], pod_labels["gateway"])
        for rule in p["spec"].get("ingress", [])
        if {q.get("port") for q in rule.get("ports", [])} & {"grpc", GRPC_PORT} and not rule.get("from")
    ]
    assert gateway_open, "the gateway's gRPC port must be reachable from outside the namespace"


# ---- Dockerfile --------------------------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean(tools: dict[str, str]) -> None:
    ok(run([tools["hadolint"], "--failure-threshold", "warning", str(DOCKERFILE)]))


def _stages() -> dict[str, str]:
    """Dockerfile stage name -> its instructions."""
    stages: dict[str, str] = {}
    name = None
    for line in DOCKERFILE.read_text().splitlines():
        if m := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I):
            name = m.group(1)
            stages[name] = ""
        elif name and line.strip() and not line.lstrip().startswith("#"):
            stages[name] += line + "\n"
    return stages


def test_dockerfile_targets() -> None:
    stages = _stages()
    targets = {"gateway", "ingest", "ingest-worker", "encoder", "encoder-gpu", "search", "rerank"}
    assert targets <= set(stages)
    modules = {"ingest-worker": "services.ingest.worker", "encoder-gpu": "services.encoder"}
    for target in targets:
        module = modules.get(target, f"services.{target}")
        assert f'CMD ["python", "-m", "{module}"]' in stages[target], target
        assert importlib.util.find_spec(module) is not None, module
    # the model repository is copied into the encoder images only
    assert [s for s, body in stages.items() if "models/" in body and "COPY" in body] == ["encoder", "encoder-gpu"]
    for runtime in ("runtime", "encoder-gpu"):
        body = stages[runtime]
        assert "USER 65534:65534" in body and "HEALTHCHECK" in body and "EXPOSE 50051 9090" in body
        assert "LOOKALIKE_LISTEN_ADDR=0.0.0.0:50051" in body
    assert "nvidia/cuda" in DOCKERFILE.read_text()


def test_image_requirements_follow_pyproject() -> None:
    import tomllib

    module = _load_module("docker_requirements", ROOT / "docker" / "requirements.py")
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    cpu = module.runtime_requirements(str(ROOT / "pyproject.toml"))
    gpu = module.runtime_requirements(str(ROOT / "pyproject.toml"), gpu=True)
    assert set(cpu) <= set(pinned)
    assert not any(r.split("==")[0] in module.LOCAL_ONLY for r in cpu)
    (ort,) = [r for r in cpu if r.startswith("onnxruntime==")]
    assert f"onnxruntime-gpu=={ort.split('==')[1]}" in gpu and ort not in gpu
    for needed in ("grpcio", "grpcio-health-checking", "onnxruntime", "pymilvus", "minio", "nats-py"):
        assert any(r.split("==")[0].split("[")[0] == needed for r in cpu), needed


# ---- kustomize ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_kustomize_overlay_is_valid(tools: dict[str, str], overlay: str) -> None:
    rendered = ok(run([tools["kubectl"], "kustomize", f"k8s/overlays/{overlay}"]))
    validate(tools, rendered)
    docs = load_docs(tools, rendered)
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {"lookalike-dev" if overlay == "dev" else "lookalike"}
    check_mesh(docs, public_gateway=overlay == "prod")
    secrets = [d for d in docs if d["kind"] == "Secret"]
    # prod expects the credentials Secret created out of band, so apply never overwrites it
    assert len(secrets) == (1 if overlay == "dev" else 0)


# ---- Helm --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def offline_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart without its (optional, not vendored) dependencies: see helm/offline_chart.py."""
    module = _load_module("offline_chart", ROOT / "helm" / "offline_chart.py")
    staged = module.stage(CHART, tmp_path_factory.mktemp("chart"))
    assert "dependencies" not in (staged / "Chart.yaml").read_text()
    return staged


def helm_template(tools: dict[str, str], env: dict[str, str], chart: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        [tools["helm"], "template", "lookalike", str(chart), "--namespace", "lookalike", "--kube-version", K8S_VERSION, *args],
        env=env,
    )


def test_chart_declares_optional_dependencies_disabled(tools: dict[str, str], tool_env: dict[str, str]) -> None:
    chart = load_docs(tools, (CHART / "Chart.yaml").read_text())[0]
    values = load_docs(tools, (CHART / "values.yaml").read_text())[0]
    deps = {d["name"]: d for d in chart["dependencies"]}
    assert set(deps) == {"milvus", "minio", "nats"}
    for name, dep in deps.items():
        assert dep["condition"] == f"{name}.enabled"
        assert values[name]["enabled"] is False
    assert not (CHART / "charts").exists(), "upstream charts are not vendored"


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_helm_lint(tools: dict[str, str], tool_env: dict[str, str], offline_chart: Path, env_name: str) -> None:
    values = str(CHART / f"values-{env_name}.yaml")
    # the chart as it is (its only warning: the undownloaded optional dependencies) ...
    ok(run([tools["helm"], "lint", str(CHART), "--kube-version", K8S_VERSION, "-f", values], env=tool_env))
    # ... and strict (warnings fail) without them
    ok(run([tools["helm"], "lint", "--strict", str(offline_chart), "--kube-version", K8S_VERSION, "-f", values], env=tool_env))


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_helm_template_is_valid(tools: dict[str, str], tool_env: dict[str, str], offline_chart: Path, env_name: str) -> None:
    rendered = ok(helm_template(tools, tool_env, offline_chart, "-f", str(CHART / f"values-{env_name}.yaml")))
    validate(tools, rendered)
    docs = load_docs(tools, rendered)
    check_mesh(docs, public_gateway=env_name == "prod")
    assert not [d for d in docs if _component(d) == "triton"], "Triton is off unless enabled"
    images = {c["image"] for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]}
    if env_name == "prod":
        assert all(i.startswith("registry.example.com/lookalike/") and i.endswith(":0.1.0") for i in images), images
        assert not [d for d in docs if d["kind"] == "Secret"], "prod uses s3Credentials.existingSecret"
    else:
        assert all(i.endswith(":dev") for i in images), images


def test_helm_triton_switches_the_encoder(tools: dict[str, str], tool_env: dict[str, str], offline_chart: Path) -> None:
    rendered = ok(helm_template(tools, tool_env, offline_chart, "-f", str(CHART / "values-prod.yaml"), "--set", "triton.enabled=true"))
    validate(tools, rendered)
    docs = load_docs(tools, rendered)
    check_mesh(docs, public_gateway=True)
    triton = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "triton"]
    (service,) = [d for d in docs if d["kind"] == "Service" and _component(d) == "triton"]
    assert len(triton) == 1
    (container,) = triton[0]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    (encoder,) = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "encoder"]
    env = {e["name"]: e["value"] for e in encoder["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LOOKALIKE_ENCODER_BACKEND"] == "triton"
    assert env["LOOKALIKE_TRITON_URL"] == f"{service['metadata']['name']}:8001"


def test_helm_gpu_encoder_uses_the_gpu_image(tools: dict[str, str], tool_env: dict[str, str], offline_chart: Path) -> None:
    rendered = ok(helm_template(tools, tool_env, offline_chart, "--set", "encoder.gpu.enabled=true"))
    validate(tools, rendered)
    (encoder,) = [d for d in load_docs(tools, rendered) if d["kind"] == "Deployment" and _component(d) == "encoder"]
    (container,) = encoder["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0].endswith("/encoder-gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway": {"replicas": "three"}}, "/gateway/replicas"),
        ({"encoder": {"replicas": -1}}, "/encoder/replicas"),
        ({"encoder": {"backend": "tensorflow"}}, "/encoder/backend"),
        ({"ingestWorker": {"autoscaling": {"maxReplicas": 0}}}, "/ingestWorker/autoscaling/maxReplicas"),
        ({"endpoints": {"nats": {"url": "http://nats:4222"}}}, "/endpoints/nats/url"),
        ({"extraConfig": {"RPC_TIMEOUT_S": "5"}}, "RPC_TIMEOUT_S"),
        ({"gatway": {"replicas": 1}}, "gatway"),
    ],
)
def test_values_schema_rejects_bad_values(
    tools: dict[str, str], tool_env: dict[str, str], offline_chart: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(json.dumps(values))  # JSON is YAML
    proc = helm_template(tools, tool_env, offline_chart, "-f", str(bad))
    assert proc.returncode != 0, f"helm accepted {values}"
    assert "schema" in proc.stderr and message in proc.stderr, proc.stderr


def test_helm_refuses_inconsistent_encoder_settings(tools: dict[str, str], tool_env: dict[str, str], offline_chart: Path) -> None:
    both = helm_template(tools, tool_env, offline_chart, "--set", "triton.enabled=true", "--set", "encoder.gpu.enabled=true")
    assert both.returncode != 0 and "exclusive" in both.stderr
    nowhere = helm_template(tools, tool_env, offline_chart, "--set", "encoder.backend=triton")
    assert nowhere.returncode != 0 and "endpoints.triton.url" in nowhere.stderr
    external = ok(helm_template(tools, tool_env, offline_chart, "--set", "encoder.backend=triton", "--set", "endpoints.triton.url=triton.gpu:8001"))
    assert "triton.gpu:8001" in external
