"""capnas.graph: how the agents are wired. State, build_graph, routing, runtime context, run journal."""
