"""capnas.tools: what agents can do. Datasets, vocabularies, metrics, components, training and evaluation jobs."""
