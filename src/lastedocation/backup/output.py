"""Reading restic's and rclone's output: the reason a command failed, whether the target
was unreachable, and which lines of a check are problems."""

from __future__ import annotations


def _clean(line: str) -> str:
    """A log line without rclone's timestamp and level."""
    text = line.strip()
    if text[:4].isdigit() and text[4:5] == "/":
        text = text[20:].strip()
    for level in ("ERROR :", "NOTICE:", "Fatal:", "CRITICAL:"):
        text = text.removeprefix(level).strip()
    return text


def reason(lines: list[str]) -> str:
    """The last meaningful error line."""
    useful = [
        _clean(line)
        for line in lines
        if line.strip() and "Config file" not in line and not line.lstrip().startswith("[")
    ]
    fatal = [line for line in useful if "rror" in line or "failed" in line or "unable" in line]
    chosen = (fatal or useful or ["no reason given"])[-1]
    return chosen[:500]


def unreachable(reason: str) -> bool:
    words = (
        "no such host",
        "connection refused",
        "i/o timeout",
        "timeout",
        "did not answer",
        "network is unreachable",
        "dial tcp",
        "no answer",
        "connect:",
    )
    return any(word in reason.lower() for word in words)


def missing_only(stderr: str) -> bool:
    """rclone found the remote but not the folder (it is created by the first backup)."""
    text = stderr.lower()
    return "directory not found" in text or ("not found" in text and "bucket" not in text)


def no_repository(reason: str) -> bool:
    text = reason.lower()
    return any(
        w in text
        for w in (
            "no such file",
            "not found",
            "does not exist",
            "404",
            "is there a repository",
            "unable to open config",
        )
    )


def is_problem(line: str) -> bool:
    text = line.strip().lower()
    if text.endswith("not referenced in any index"):
        # packs an interrupted backup sent before it was killed: restic calls them
        # non-critical (no snapshot uses them; a prune removes them), so is a verify
        return False
    return (
        bool(text)
        and any(
            word in text
            for word in (
                "does not match",
                "error",
                "missing",
                "not referenced",
                "damaged",
                "invalid",
                "unable to",
                "contained in several",
            )
        )
        and not text.startswith(
            ("fatal: repository contains errors", "check snapshots", "no errors were found")
        )
    )
