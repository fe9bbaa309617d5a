"""Using trained models: generation, chat and evaluation."""
