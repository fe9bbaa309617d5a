"""Datasets: streaming parsing, format detection, validation, statistics,
Persian normalization, splitting and the content-addressed store."""
