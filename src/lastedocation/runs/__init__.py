"""Runs as a service: the queue, the state machine, the supervisor that spawns and
watches trainer processes, and the ingestion of their events."""
