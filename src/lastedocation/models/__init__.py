"""Models: safe archives, safetensors checks, export, model cards and the Hub."""
