"""The trainer: a separate process that trains one run in RUN_DIR.

It imports no web or database code and talks to the world only through files
in its run folder (config.yaml, events.jsonl, heartbeat, control,
checkpoints/, model/), signals and its exit code, so it runs the same under
the studio's supervisor, under torchrun, or headless (`lastedocation train`).
"""
