"""deploy/: the Kubernetes manifests validate against the Kubernetes 1.31 schemas (strict:
unknown fields fail; kubernetes-validate, pinned, offline), their probes and commands name what the
project has, and the operator docs list every setting the hub reads."""

import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.31.0"
SANDBOX_EXAMPLE = "sandbox-job.example.yaml"
MANIFESTS = sorted((ROOT / "deploy/kubernetes").glob("*.yaml"))


def _documents():
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path.name, document


def test_every_manifest_validates_strictly_against_the_kubernetes_schema():
    kinds = []
    for name, document in _documents():
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
        kinds.append((name, document["kind"], document["metadata"]["name"]))
    assert ("hub.yaml", "Deployment", "vaultbench-hub-beat") in kinds
    assert ("site-agent.yaml", "Deployment", "vaultbench-site-agent") in kinds
    assert ("sandbox-job.example.yaml", "Job", "vb-sandbox-job-id") in kinds
    assert ("sandbox-job.example.yaml", "NetworkPolicy", "vaultbench-sandbox-deny-all") in kinds


def test_the_validator_catches_a_typo():
    name, document = next((n, d) for n, d in _documents() if d["kind"] == "Deployment")
    document["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_probes_commands_and_the_single_beat_match_the_project():
    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]) | {"gunicorn", "celery"}
    deployments = {
        d["metadata"]["name"]: d
        for n, d in _documents()
        if d["kind"] in ("Deployment", "Job") and n != SANDBOX_EXAMPLE  # runs the runner image, not ours
    }
    for name, deployment in deployments.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["command"][0] in scripts, name
    web = deployments["vaultbench-hub-web"]["spec"]["template"]["spec"]["containers"][0]
    assert (web["livenessProbe"]["httpGet"]["path"], web["readinessProbe"]["httpGet"]["path"]) == ("/healthz", "/readyz")
    beat = deployments["vaultbench-hub-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    for unit in (ROOT / "deploy/systemd").glob("*.service"):
        for line in unit.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")) and "/venv/bin/" in line:
                assert line.split("/venv/bin/")[1].split()[0] in scripts, (unit.name, line)


def test_every_hub_deployment_runs_threads_and_the_shared_cache():
    """compose, systemd and Kubernetes run gunicorn with `--threads 8` (federated long polling
    holds a thread) and set VAULTBENCH_CACHE_URL to Redis (the workers share cached answers)."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    web = next(d for n, d in _documents() if d["metadata"]["name"] == "vaultbench-hub-web")
    config = next(d for n, d in _documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "vaultbench-hub")
    commands = {
        "compose": " ".join(compose["services"]["hub"]["command"]),
        "systemd": (ROOT / "deploy/systemd/vaultbench-hub.service").read_text(),
        "kubernetes": " ".join(web["spec"]["template"]["spec"]["containers"][0]["command"]),
    }
    for name, command in commands.items():
        assert re.search(r"gunicorn marketplace\.wsgi .*--threads 8", command), name
    caches = {
        "compose": compose["services"]["hub"]["environment"]["VAULTBENCH_CACHE_URL"],
        "systemd": re.search(r"^VAULTBENCH_CACHE_URL=(.+)$", (ROOT / "deploy/systemd/hub.env.example").read_text(), re.M)[1],
        "kubernetes": config["data"]["VAULTBENCH_CACHE_URL"],
    }
    for name, url in caches.items():
        assert url.startswith("redis://") and url.endswith("/1"), name  # not the broker's database 0


def test_the_hub_docs_list_every_environment_variable_the_hub_reads():
    settings_text = (ROOT / "marketplace/settings.py").read_text()
    names = set(re.findall(r'env_(?:str|int|bool|list)\("([A-Z0-9_]+)"', settings_text))
    doc = (ROOT / "docs/running-a-hub.md").read_text()
    assert "VAULTBENCH_VAR_DIR" in names
    assert sorted(n for n in names if f"`{n}`" not in doc) == []


def test_the_sandbox_job_example_carries_the_sandbox_run_profile():
    from evaluator.sandbox import RUN_PROFILE, RUNNER_ENTRYPOINT, SANDBOX_LABEL, SANDBOX_UID

    docs = {d["kind"]: d for n, d in _documents() if n == SANDBOX_EXAMPLE}
    job, policy = docs["Job"], docs["NetworkPolicy"]
    assert (job["spec"]["backoffLimit"], "activeDeadlineSeconds" in job["spec"]) == (0, True)
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["template"]["metadata"]["labels"][SANDBOX_LABEL] == "1"
    # network "none": a policy selecting the sandbox label with no rule in either direction
    assert policy["spec"]["podSelector"]["matchLabels"] == {SANDBOX_LABEL: "1"}
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]
    assert pod["runtimeClassName"] == docs["RuntimeClass"]["metadata"]["name"]
    assert docs["RuntimeClass"]["handler"] == "runsc"
    assert (pod["automountServiceAccountToken"], pod["enableServiceLinks"], pod["hostNetwork"]) == (False,) * 3
    assert (pod["restartPolicy"], pod["hostname"]) == ("Never", RUN_PROFILE["hostname"])
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == ctx["runAsGroup"] == SANDBOX_UID
    assert ctx["seccompProfile"] == {"type": "Localhost", "localhostProfile": "vaultbench/sandbox.json"}
    (runner,) = pod["containers"]
    assert tuple(runner["command"]) == RUNNER_ENTRYPOINT
    assert runner["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": RUN_PROFILE["cap_drop"]},
    }
    assert runner["resources"]["limits"] == runner["resources"]["requests"]
    assert {"cpu", "memory"} <= set(runner["resources"]["limits"])
    env = {e["name"]: e["value"] for e in runner["env"]}
    assert RUN_PROFILE["environment"].items() <= env.items()
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in runner["volumeMounts"]:
        if mount["mountPath"] in ("/out", "/tmp", "/dev/shm"):
            assert not mount.get("readOnly"), mount
        else:  # every input is read-only, at both the mount and the claim
            assert mount["readOnly"] is True, mount
            assert volumes[mount["name"]]["persistentVolumeClaim"]["readOnly"] is True
    assert all("sizeLimit" in v["emptyDir"] for v in volumes.values() if "emptyDir" in v)
