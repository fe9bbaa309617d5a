"""The model registry through the API: a completed run registers its model, which is
exported, downloaded, imported again, evaluated and compared, with the real trainer."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM

from lastedocation.settings import Settings
from tests.conftest import add_account, sign_in
from tests.runs.test_runs_api import TINY, fast_settings, signed_in, upload_percqa, wait_for

__all__ = ["fast_settings"]  # the fixture, imported for this module's tests


def wait_evaluation(client: TestClient, model_id: int, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        evaluations = client.get(f"/api/v1/models/{model_id}/evaluations").json()
        if evaluations and evaluations[0]["state"] in ("completed", "failed"):
            return dict(evaluations[0])
        time.sleep(0.3)
    raise AssertionError(f"the evaluation of model {model_id} did not finish")


def logits(folder: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    with torch.no_grad():
        return model(torch.tensor([[1, 5, 9, 14, 3, 7]])).logits


@pytest.mark.slow
def test_a_completed_run_becomes_a_model_people_can_use(
    fast_settings: Settings, tmp_path: Path
) -> None:
    with signed_in(fast_settings) as client:
        dataset_id = upload_percqa(client)
        run = client.post("/api/v1/runs", json={"dataset_id": dataset_id, **TINY}).json()
        wait_for(client, run["id"], {"completed"})

        models = wait_models(client, 1)
        model = models[0]
        assert model["run_id"] == run["id"] and model["source"] == "run"
        assert model["dataset_id"] == dataset_id
        assert model["base_model"] == "scratch:llama-tiny"
        assert model["metrics"]["final_eval"]["step"] == 30
        assert model["lineage"]["checkpoints"] and model["summary"]["parameters"] > 0
        detail = client.get(f"/api/v1/models/{model['id']}").json()
        assert detail["config"]["training"]["max_steps"] == 30

        exported = client.post(
            f"/api/v1/models/{model['id']}/export", json={"archive": "zip"}
        ).json()
        # loaded fresh, generated, configured to stop at EOS, same chat template
        assert exported.get("smoke_test", {}).get("chat_template_matches"), exported
        download = client.get(f"/api/v1/models/{model['id']}/export/archive")
        assert download.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
        assert any(n.endswith("model.safetensors") for n in names)
        assert any(n.endswith("README.md") for n in names)

        again = client.post(
            "/api/v1/models/import/archive",
            files={"file": ("copy.zip", download.content, "application/zip")},
        )
        assert again.status_code == 201, again.text
        copy = again.json()
        assert copy["source"] == "upload" and copy["name"] == "copy"
        twice = client.post(
            "/api/v1/models/import/archive",
            files={"file": ("copy.zip", download.content, "application/zip")},
        )
        assert twice.status_code == 201 and twice.json()["name"] == "copy-2"  # not a 409
        assert client.delete(f"/api/v1/models/{twice.json()['id']}").status_code == 204
        data_dir = fast_settings.data_dir
        original = logits(data_dir / "models" / f"{model['id']:06d}")
        assert torch.equal(original, logits(data_dir / "models" / f"{copy['id']:06d}"))

        for model_id in (model["id"], copy["id"]):
            queued = client.post(
                f"/api/v1/models/{model_id}/evaluations",
                json={"dataset_id": dataset_id, "max_rows": 8, "max_new_tokens": 8},
            )
            assert queued.status_code == 202, queued.text
            done = wait_evaluation(client, model_id)
            assert done["state"] == "completed", done["message"]
            assert done["results"]["perplexity"] > 1 and done["results"]["rows"] == 8
        compared = client.get(
            "/api/v1/models/compare", params={"ids": [model["id"], copy["id"]]}
        ).json()
        delta = compared["models"][1]["against_baseline"]["perplexity"]
        assert delta["delta"] == pytest.approx(0, abs=1e-6)  # the same weights

        bad = client.post(
            "/api/v1/models/import/archive",
            files={"file": ("weights.bin", b"\x80\x04K\x01.", "application/octet-stream")},
        )
        assert bad.status_code == 400 and "archive" in bad.json()["detail"]
        assert client.delete(f"/api/v1/models/{copy['id']}").status_code == 204
        assert not (data_dir / "models" / f"{copy['id']:06d}").exists()


def wait_models(client: TestClient, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = client.get("/api/v1/models").json()
        if len(models) >= count:
            return list(models)
        time.sleep(0.2)
    raise AssertionError("the completed run's model was not registered")


def test_models_belong_to_their_owner_and_folders_are_for_admins(
    fast_settings: Settings, tmp_path: Path
) -> None:
    add_account(fast_settings, "mina")
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with signed_in(fast_settings) as admin:
        refused = admin.post("/api/v1/models/register", json={"path": str(folder)})
        assert refused.status_code == 400, refused.text
        assert "pytorch_model.bin" in refused.json()["detail"]
        missing = admin.post("/api/v1/models/register", json={"path": str(tmp_path / "nope")})
        assert missing.status_code == 400
        member = TestClient(admin.app)
        sign_in(member, "mina")
        assert member.post("/api/v1/models/register", json={"path": "/"}).status_code == 403
        assert member.get("/api/v1/models/1").status_code == 404
        assert member.get("/api/v1/models").json() == []
        assert member.get("/api/v1/models/compare", params={"ids": [1]}).status_code == 422
