"""Datasets, vocabularies, the prepared cache and stored frozen-encoder features."""
