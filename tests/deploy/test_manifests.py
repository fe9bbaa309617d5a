"""compose.yaml against the Compose specification's schema, the Kubernetes manifests
against Kubernetes' own (both offline, from the validators' wheels), and the settings
that must agree across them: names the studio knows, limits nginx and the studio share,
grace periods longer than the pause they wait for."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kube

from tests.deploy.files import (
    DEPLOY,
    default,
    load_all,
    nginx_body_limits,
    studio_env_names,
    unknown_env,
)

COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSIONS = ["1.29.0", kube.latest_version()]  # the oldest still common, the newest


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the Compose specification's schema it ships (Apache-2.0)."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60)


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    checked = check_compose(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the check bites: a misspelt key in the shared studio block is refused
    typo = tmp_path / "compose.yaml"
    typo.write_text(COMPOSE.read_text().replace("  shm_size:", "  shm_sise:"), encoding="utf-8")
    refused = check_compose(typo)
    assert refused.returncode == 1 and "shm_sise" in refused.stdout, refused.stdout


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def test_compose_studio_settings_agree_with_the_studio_and_nginx() -> None:
    services = _compose()["services"]
    for name in ("studio", "studio-gpu"):
        studio = services[name]
        env = studio["environment"]
        assert not unknown_env(env), f"{name}: unknown variables {unknown_env(env)}"
        assert env["LASTEDOCATION_PAUSE_RUNS_ON_SHUTDOWN"] == "true"
        # docker stop waits for the paused trainers, then kills
        pause = float(env["LASTEDOCATION_SHUTDOWN_PAUSE_TIMEOUT_S"])
        assert _seconds(studio["stop_grace_period"]) >= pause + 15
        assert nginx_body_limits()["server"] == f"{int(env['LASTEDOCATION_MAX_UPLOAD_MB']) + 1}m"
        assert studio["volumes"] == ["studio-data:/data"]
        assert studio["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "ports" not in studio  # only nginx is reachable from outside
        assert studio["env_file"] == "studio.env"
        assert "studio" in studio["networks"]["default"]["aliases"]  # nginx's upstream
    assert services["studio"]["profiles"] == ["cpu"]
    assert services["studio-gpu"]["profiles"] == ["gpu"]
    assert services["studio-gpu"]["build"]["args"]["VARIANT"] == "cuda"
    devices = services["studio-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_compose_database_and_proxy_are_wired() -> None:
    compose = _compose()
    postgres = compose["services"]["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    # the password is a secret file, not a value in compose.yaml
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert compose["secrets"]["postgres_password"]["file"] == "./secrets/postgres_password"
    example = (DEPLOY / "studio.env.example").read_text(encoding="utf-8")
    assert "LASTEDOCATION_DATABASE_URL=postgresql+psycopg://studio:" in example
    assert "@postgres:5432/studio" in example
    names = [line.split("=", 1)[0].lstrip("# ") for line in example.splitlines() if "=" in line]
    assert not unknown_env(names)
    nginx = compose["services"]["nginx"]
    mount = nginx["volumes"][0].split(":")
    assert (DEPLOY / mount[0]).resolve() == (DEPLOY / "nginx" / "lastedocation.conf")
    assert mount[1] == "/etc/nginx/conf.d/default.conf"
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert {".env", "studio.env", "secrets/"} <= set(ignored)


def test_nginx_upload_limits_are_the_studios_plus_the_envelope() -> None:
    limits = nginx_body_limits()
    assert limits["server"] == f"{default('LASTEDOCATION_MAX_UPLOAD_MB') + 1}m"
    assert limits["server"] == f"{default('LASTEDOCATION_MAX_AUDIO_UPLOAD_MB') + 1}m"
    speech = default("LASTEDOCATION_MAX_SPEECH_UPLOAD_MB") + 1
    assert limits["= /api/v1/datasets/speech"] == f"{speech}m"
    model = default("LASTEDOCATION_MAX_MODEL_UPLOAD_MB") + 1
    assert limits["~ ^(/api/v1)?/models/import/archive$"] == f"{model}m"


def _manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = [K8S / name for name in kustomization["resources"]]
    assert {path.name for path in K8S.glob("*.yaml")} - {p.name for p in listed} == {
        "kustomization.yaml",
        "secret.example.yaml",  # applied by hand: secrets never live in git
    }
    return [doc for path in [*listed, K8S / "secret.example.yaml"] for doc in load_all(path)]


def _validate(doc: dict[str, Any]) -> None:
    for version in KUBERNETES_VERSIONS:
        kube.validate(doc, version, strict=True)  # strict: unknown fields are errors


def test_kubernetes_manifests_follow_the_kubernetes_schemas() -> None:
    manifests = _manifests()
    kinds = sorted(doc["kind"] for doc in manifests)
    assert kinds == [
        "ConfigMap", "Ingress", "Ingress", "Namespace", "Secret", "Service", "StatefulSet"
    ]  # fmt: skip
    for doc in manifests:
        _validate(doc)
    # the check bites: a misspelt field is refused
    broken = copy.deepcopy(next(d for d in manifests if d["kind"] == "StatefulSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kube.ValidationError):
        _validate(broken)


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _manifests() if doc["kind"] == kind]


def _apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 `add` (what the GPU overlay uses), as kustomize applies it."""
    patched = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add", op
        *parents, last = [
            part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]
        ]
        target: Any = patched
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = op["value"]
    return patched


def test_gpu_overlay_requests_a_gpu_and_stays_valid() -> None:
    overlay = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert overlay["resources"] == ["../"]
    assert overlay["images"][0]["newTag"] == "cuda"
    (patch,) = overlay["patches"]
    assert patch["target"] == {"kind": "StatefulSet", "name": "lastedocation"}
    (statefulset,) = _by_kind("StatefulSet")
    gpu = _apply_json_patch(statefulset, yaml.safe_load(patch["patch"]))
    _validate(gpu)
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_statefulset_probes_volume_and_grace_period() -> None:
    (statefulset,) = _by_kind("StatefulSet")
    (settings,) = _by_kind("ConfigMap")
    (service,) = _by_kind("Service")
    assert statefulset["spec"]["replicas"] == 1  # one supervisor owns the runs
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    data = settings["data"]
    assert not unknown_env(data), unknown_env(data)
    assert data["LASTEDOCATION_PAUSE_RUNS_ON_SHUTDOWN"] == "true"
    pause = float(data["LASTEDOCATION_SHUTDOWN_PAUSE_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= pause + 15
    refs = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]}
    (secret,) = _by_kind("Secret")
    assert refs == {settings["metadata"]["name"], secret["metadata"]["name"]}
    assert set(secret["stringData"]) <= studio_env_names()
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_ingress_streams_events_and_uploads_up_to_the_limits() -> None:
    main, archives = _by_kind("Ingress")
    prefix = "nginx.ingress.kubernetes.io/"
    for ingress in (main, archives):
        notes = ingress["metadata"]["annotations"]
        assert notes[prefix + "proxy-buffering"] == "off"
        assert notes[prefix + "proxy-request-buffering"] == "off"
        assert int(notes[prefix + "proxy-read-timeout"]) >= 3600
        backends = [p["backend"]["service"]["name"] for r in ingress["spec"]["rules"]
                    for p in r["http"]["paths"]]  # fmt: skip
        assert set(backends) == {"lastedocation"}
    body_size = main["metadata"]["annotations"][prefix + "proxy-body-size"]
    assert body_size == nginx_body_limits()["server"]
    model = default("LASTEDOCATION_MAX_MODEL_UPLOAD_MB") + 1
    assert archives["metadata"]["annotations"][prefix + "proxy-body-size"] == f"{model}m"
    paths = {p["path"] for r in archives["spec"]["rules"] for p in r["http"]["paths"]}
    assert paths == {
        "/api/v1/datasets/speech",
        "/api/v1/models/import/archive",
        "/models/import/archive",
    }
