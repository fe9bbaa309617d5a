"""Backup and restore of the whole studio: targets, staging, the engine, jobs."""
