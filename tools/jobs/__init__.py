"""Sandboxed jobs (validation, training, layer tables), where they run (executors) and when (slots)."""
