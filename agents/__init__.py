"""capnas.agents: who decides. One module per role, its prompt and its structured output."""
