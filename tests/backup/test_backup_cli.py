"""`lastedocation backup ...` as an operator uses it on the server, and on a new machine."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lastedocation.cli import app
from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account

runner = CliRunner()


def env(data_dir: Path, nas: Path) -> dict[str, str]:
    target = {
        "name": "nas",
        "kind": "folder",
        "path": str(nas),
        "keep_last": 1,
        "keep_daily": 0,
        "keep_weekly": 0,
    }
    return {
        "LASTEDOCATION_DATA_DIR": str(data_dir),
        "LASTEDOCATION_BACKUP_TARGETS": json.dumps([target]),
    }


def test_back_up_list_verify_prune_and_restore_on_a_new_machine(tmp_path: Path) -> None:
    old, nas = tmp_path / "old", tmp_path / "nas"
    add_account(Settings(data_dir=old), ADMIN, role="admin")
    listed = runner.invoke(app, ["backup", "targets", "--json"], env=env(old, nas))
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)[0]["where"] == str(nas)

    for _ in range(2):
        done = runner.invoke(app, ["backup", "now"], env=env(old, nas))
        assert done.exit_code == 0, done.output
        assert "snapshot " in done.stdout and "sent" in done.stdout
    snaps = runner.invoke(app, ["backup", "list", "--json"], env=env(old, nas))
    assert snaps.exit_code == 0, snaps.output
    assert len(json.loads(snaps.stdout)) == 1  # keep_last=1: the backup pruned the first

    verified = runner.invoke(app, ["backup", "verify"], env=env(old, nas))
    assert verified.exit_code == 0 and "no problems" in verified.stdout, verified.output
    pruned = runner.invoke(app, ["backup", "prune", "--target", "nas"], env=env(old, nas))
    assert pruned.exit_code == 0 and "removed 0 snapshot" in pruned.stdout, pruned.output

    new = tmp_path / "new"
    restored = runner.invoke(app, ["backup", "restore"], env=env(new, nas))
    assert restored.exit_code == 0, restored.output
    assert (new / "studio.db").is_file() and "sqlite database" in restored.stdout
    users = runner.invoke(app, ["users", "list"], env=env(new, nas))
    assert ADMIN in users.stdout

    again = runner.invoke(app, ["backup", "restore"], env=env(new, nas))
    assert again.exit_code == 1 and "already holds a studio" in again.output
    forced = runner.invoke(app, ["backup", "restore", "--force"], env=env(new, nas))
    assert forced.exit_code == 0, forced.output
    aside = list((new / "backup").glob("replaced-*"))
    assert len(aside) == 1 and (aside[0] / "studio.db").is_file()  # moved aside, not deleted


def test_clear_errors_for_an_unknown_target_and_no_target(tmp_path: Path) -> None:
    unknown = runner.invoke(
        app, ["backup", "now", "--target", "cloud"], env=env(tmp_path / "d", tmp_path / "n")
    )
    assert unknown.exit_code == 1
    assert "no backup target called 'cloud' (nas)" in unknown.output
    none = runner.invoke(
        app,
        ["backup", "list"],
        env={"LASTEDOCATION_DATA_DIR": str(tmp_path / "d"), "LASTEDOCATION_BACKUP_TARGETS": "[]"},
    )
    assert none.exit_code == 1 and "no backup target is configured" in none.output
    missing = runner.invoke(
        app,
        ["backup", "restore", "--snapshot", "deadbeef"],
        env=env(tmp_path / "e", tmp_path / "n"),
    )
    assert missing.exit_code != 0 and "folder (target 'nas')" in missing.output
