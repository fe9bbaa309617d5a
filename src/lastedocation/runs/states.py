"""The run state machine: which actions each state allows, and what they lead to.

queued -> starting -> running -> completed
                         |-> pausing -> paused -> (resume) queued
                         |-> stopping -> stopped
any active state -> failed (the trainer said so) | interrupted (it died)
interrupted -> (resume) queued
"""

from __future__ import annotations

from lastedocation.errors import Conflict

ACTIVE = ("starting", "running", "pausing", "stopping")
FINAL = ("stopped", "completed", "failed")
ALLOWED: dict[str, tuple[str, ...]] = {
    "pause": ("starting", "running"),
    "resume": ("paused", "interrupted"),
    "stop": ("queued", "starting", "running", "pausing", "paused", "interrupted"),
    "checkpoint": ("running",),
    "delete": ("queued", "paused", "interrupted", *FINAL),
    "restore": ("paused", "interrupted", *FINAL),
}


def allowed_actions(state: str) -> list[str]:
    return [action for action, states in ALLOWED.items() if state in states]


def check(action: str, state: str) -> None:
    """Raise 409 naming what the run's state allows instead."""
    if state not in ALLOWED[action]:
        allowed = ", ".join(allowed_actions(state)) or "nothing"
        raise Conflict(
            f"cannot {action} a run that is {state}; a {state} run allows: {allowed}",
            state=state,
            allowed=allowed_actions(state),
        )
