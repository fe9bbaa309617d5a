"""LASTEDOCATION: a self-hosted studio for training Persian language models."""

__version__ = "0.1.0"
