"""`build_graph(checkpointer=...)`: the capnas state machine.

    planner ─┬─► candidate ─┬─► promoter -> evaluator -> critic -> planner ... -> reporter
             ├─► candidate ─┤     (one `Send` per candidate of the round; the branches run at once and are
             └─► ...       ─┘      joined before the promoter, which trains the promising on to their next rung)

    candidate:  coder -> validator -> trainer
                  ^         |  (violations: repair, at most R rounds)
                  +---------+

`graph` (compiled without a checkpointer) is what `langgraph.json` serves: LangGraph Server and Studio bring
their own persistence, and its context is a `ServedContext` (its workspace defaults to outside the served
folder). The CLI and chat compile with a SqliteSaver; a team may pass a Postgres saver. The candidate branch
is a subgraph, so it shares the parent's checkpointer and is checkpointed step by step too.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from capnas.graph import nodes, promotion, routing
from capnas.graph.context import Context, ServedContext
from capnas.graph.state import CandidateOutput, CandidateState, RunState


def build_candidate_graph():
    """One candidate's branch: write it, validate it (repairing while rounds remain), train it."""
    g = StateGraph(CandidateState, context_schema=Context, output_schema=CandidateOutput)
    g.add_node("coder", nodes.coder_node)
    g.add_node("validator", nodes.validator_node, destinations=("coder", "trainer", END))
    g.add_node("trainer", nodes.trainer_node)
    g.add_edge(START, "coder")
    g.add_conditional_edges("coder", routing.after_coder)
    g.add_edge("trainer", END)
    return g.compile(name="candidate")


def build_graph(checkpointer=None, context_schema: type[Context] = Context):
    g = StateGraph(RunState, context_schema=context_schema)
    g.add_node("planner", nodes.planner_node)
    g.add_node("candidate", build_candidate_graph())
    g.add_node("promoter", promotion.promoter_node)
    g.add_node("evaluator", nodes.evaluator_node)
    g.add_node("critic", nodes.critic_node)
    g.add_node("reporter", nodes.reporter_node)

    g.add_edge(START, "planner")
    g.add_conditional_edges("planner", routing.after_planner, ["candidate", "reporter"])
    g.add_edge("candidate", "promoter")
    g.add_edge("promoter", "evaluator")
    g.add_edge("evaluator", "critic")
    g.add_conditional_edges("critic", routing.after_critic)
    g.add_edge("reporter", END)
    return g.compile(checkpointer=checkpointer, name="capnas")


graph = build_graph(context_schema=ServedContext)
