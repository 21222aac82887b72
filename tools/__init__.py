"""capnas.tools: what the nodes can do, in rooms of their own.

- `task`: the typed `Task` every room reads (the graph's input);
- `design/`: the design space (component library, architecture specs, reference models);
- `data/`: datasets, vocabularies, the prepared cache and stored frozen-encoder features;
- `scoring/`: the COCO caption metrics and the evaluator (outside the sandbox);
- `jobs/`: sandboxed work (validation, training, layer tables), where it runs (executors) and when (slots);
- `report/`: what people read (run summary, HTML report, model card, export).

Within tools the arrows point one way: report -> jobs -> scoring -> data -> design -> task
(`tests/test_layers.py` holds the rule)."""
