"""The Dockerfile, parsed (no container engine runs here), and its install script run for
real on a fresh copy of the source tree: the studio it installs starts and serves its
pages and front-end files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.files import DEPLOY, ROOT, default, unknown_env
from tests.server import free_port

INSTALL = DEPLOY / "install.sh"


def _stages() -> dict[str, list[dict[str, Any]]]:
    """The Dockerfile's instructions by stage name (ARGs before the first FROM: "")."""
    stages: dict[str, list[dict[str, Any]]] = {"": []}
    current = ""
    for item in DockerfileParser(str(DEPLOY / "Dockerfile")).structure:
        if item["instruction"] == "FROM":
            current = item["value"].split(" AS ")[1].strip()
            stages[current] = []
        stages[current].append(item)
    return stages


def _values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [item["value"] for item in stage if item["instruction"] == instruction]


def _pairs(values: list[str]) -> dict[str, str]:
    """KEY=VALUE words of ARG or ENV instructions."""
    return dict(word.split("=", 1) for value in values for word in shlex.split(value))


def _torch_pin() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (pin,) = [d for d in project["project"]["dependencies"] if d.startswith("torch==")]
    return str(pin).removeprefix("torch==")


def test_dockerfile_builds_a_cpu_image_or_a_cuda_one_from_pytorchs_base() -> None:
    stages = _stages()
    args = _pairs(_values(stages[""], "ARG"))
    assert args["VARIANT"] == "cpu"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    # the CUDA base carries torch itself: the same version that pyproject.toml pins
    assert args["CUDA_IMAGE"].startswith(f"pytorch/pytorch:{_torch_pin()}-cuda")
    assert _values(stages["base-cpu"], "FROM") == ["${PYTHON_IMAGE} AS base-cpu"]
    assert _values(stages["base-cuda"], "FROM") == ["${CUDA_IMAGE} AS base-cuda"]
    assert _values(stages["base"], "FROM") == ["base-${VARIANT} AS base"]
    assert _values(stages["build"], "FROM") == ["base AS build"]
    assert _values(stages["runtime"], "FROM") == ["base AS runtime"]
    assert list(stages)[-1] == "runtime"  # what `docker build` makes without --target


def test_dockerfile_installs_with_the_script_the_tests_run() -> None:
    stages = _stages()
    steps = re.findall(r"^  (\w+)\)$", INSTALL.read_text(encoding="utf-8"), re.MULTILINE)
    assert steps == ["system", "frontend", "python", "assets"]
    runs = {name: _values(stage, "RUN") for name, stage in stages.items()}
    assert runs["frontend"] == ["deploy/install.sh frontend"]
    assert runs["build"] == [
        "deploy/install.sh python /opt/venv",
        "deploy/install.sh assets /opt/venv node_modules",
    ]
    assert runs["runtime"][0] == "/usr/local/lib/lastedocation/install.sh system"
    assert "deploy/install.sh /usr/local/lib/lastedocation/install.sh" in _values(
        stages["runtime"], "COPY"
    )
    assert "--from=build /opt/venv /opt/venv" in _values(stages["runtime"], "COPY")
    # the build context leaves out what the image makes itself, and local data
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split("\n")
    for path in (".venv", "node_modules", "studio-data", ".git", "deploy/secrets"):
        assert path in ignored, path
    assert "src/lastedocation/web/static/vendor" in ignored


def test_image_runs_the_studio_as_a_user_with_one_data_volume_and_stops_cleanly() -> None:
    runtime = _stages()["runtime"]
    (user,) = _values(runtime, "USER")
    assert user not in ("root", "0")
    (adduser,) = [run for run in _values(runtime, "RUN") if "useradd" in run]
    assert f"--uid 10001 --user-group --create-home --home-dir /home/{user} {user}" in adduser
    assert f"chown {user}:{user} /data" in adduser
    assert _values(runtime, "VOLUME") == ['["/data"]']
    env = _pairs(_values(runtime, "ENV"))
    assert env["LASTEDOCATION_DATA_DIR"] == "/data"
    assert env["LASTEDOCATION_PAUSE_RUNS_ON_SHUTDOWN"] == "true"
    assert float(env["LASTEDOCATION_SHUTDOWN_PAUSE_TIMEOUT_S"]) > 0
    assert not unknown_env([name for name in env if name.startswith("LASTEDOCATION_")])
    assert _values(runtime, "EXPOSE") == [str(default("LASTEDOCATION_PORT"))]
    (health,) = _values(runtime, "HEALTHCHECK")
    assert "CMD [" in health and "http://127.0.0.1:8000/readyz" in health
    assert _values(runtime, "STOPSIGNAL") == ["SIGTERM"]
    # exec form: no shell between tini (PID 1, passes signals on) and the server
    (entrypoint,) = _values(runtime, "ENTRYPOINT")
    assert entrypoint.startswith("[")
    assert entrypoint == '["tini", "--", "lastedocation", "serve", "--host", "0.0.0.0"]'


def test_install_script_refuses_an_unknown_step() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    done = subprocess.run([str(INSTALL), "everything"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown step 'everything'" in done.stderr


def _fresh_copy(dest: Path) -> Path:
    """The files a clone would have (tracked, and new ones git does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # (a file deleted in the work tree is still listed)
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
def test_install_script_installs_a_studio_that_serves_its_pages(tmp_path: Path) -> None:
    source = _fresh_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    # A venv that sees this checkout's installed dependencies (torch and the rest: no
    # download, nothing from the network), so the script's `pip install .` builds and
    # installs only the studio itself, from the copy, as in the image.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "checkout-deps.pth").write_text(
        "\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE")}
    env |= {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}
    for step in (["python", str(venv)], ["assets", str(venv), str(ROOT / "node_modules")]):
        done = subprocess.run(
            ["deploy/install.sh", *step], cwd=source, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    installed = subprocess.run(
        [venv / "bin" / "python", "-c", "import lastedocation; print(lastedocation.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert installed.startswith(str(site)), installed  # the copy's build, not this checkout

    port = free_port()
    env |= {"LASTEDOCATION_DATA_DIR": str(tmp_path / "data"), "LASTEDOCATION_LOG_LEVEL": "warning"}
    server = subprocess.Popen(
        [venv / "bin" / "lastedocation", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(f"{url}/readyz").status_code == 200
        # the package data made it into the wheel: templates, translations, static files
        page = httpx.get(f"{url}/setup")
        assert page.status_code == 200 and "<html" in page.text
        for name in ("htmx.min.js", "uPlot.iife.min.js", "Vazirmatn-Variable.woff2"):
            assert httpx.get(f"{url}/static/vendor/{name}").status_code == 200, name
    finally:
        server.terminate()
        server.wait(timeout=30)
