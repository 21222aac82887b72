"""`build_graph(checkpointer=...)`: the capnas state machine.

    planner -> coder -> validator -> trainer -> evaluator -> critic -> planner ... -> reporter
                 ^          |  (violations: repair, at most R rounds)
                 +----------+

`graph` (compiled without a checkpointer) is what `langgraph.json` serves: LangGraph Server and Studio bring
their own persistence. The CLI and chat compile with a SqliteSaver; a team may pass a Postgres saver.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from capnas.graph import nodes, routing
from capnas.graph.context import Context
from capnas.graph.state import RunState


def build_graph(checkpointer=None):
    g = StateGraph(RunState, context_schema=Context)
    g.add_node("planner", nodes.planner_node)
    g.add_node("coder", nodes.coder_node)
    g.add_node("validator", nodes.validator_node, destinations=("coder", "trainer", "critic"))
    g.add_node("trainer", nodes.trainer_node)
    g.add_node("evaluator", nodes.evaluator_node)
    g.add_node("critic", nodes.critic_node)
    g.add_node("reporter", nodes.reporter_node)

    g.add_edge(START, "planner")
    g.add_conditional_edges("planner", routing.after_planner)
    g.add_conditional_edges("coder", routing.after_coder)
    g.add_edge("trainer", "evaluator")
    g.add_edge("evaluator", "critic")
    g.add_conditional_edges("critic", routing.after_critic)
    g.add_edge("reporter", END)
    return g.compile(checkpointer=checkpointer, name="capnas")


graph = build_graph()
