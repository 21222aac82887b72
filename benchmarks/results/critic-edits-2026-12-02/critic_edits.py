"""Does the embedded critic send typed edits? Today's schema (edits optional) against edits required (>= 1)."""
import json, sys, time
from pydantic import Field, create_model
from capnas.agents import critic
from capnas.agents.llm import ask_structured, build_role_models
from capnas.tools.design.edits import MAX_EDITS, edit_type
from capnas.graph.journal import Journal
from capnas.graph.refine import edit_space
from capnas.tools.task import Task
from capnas.embedded.server import embedded_models
from langchain_core.messages import HumanMessage, SystemMessage

W = "/work/bench-runs/flickr8k-epochs/workspace"
rows = [c.to_dict() for c in Journal(W + "/journal.sqlite").candidates("random-s0")]
first = [r for r in rows if r["round"] == 0] or rows[:2]
from capnas.tools.design.edits import EditSpace
space = EditSpace(("efficientnet_lite0", "lstm", "gru", "transformer"), True)
today = critic.critique_model(space)
required = create_model("Critique", __base__=critic.Critique, __doc__=critic.Critique.__doc__,
                        edits=(list[edit_type(space)], Field(..., min_length=1, max_length=MAX_EDITS,
                               description=today.model_fields["edits"].description)))
required.edit_space = space
print("required fields:", today.model_json_schema()["required"], "|", required.model_json_schema()["required"])
summaries = {"round1": critic.summarize(first, "cider"), "all4": critic.summarize(rows, "cider")}
with embedded_models(sys.argv[1] if len(sys.argv) > 1 else "0.5b", n_threads=1) as (models, desc):
    print(desc)
    for seed in (0, 1, 2):
        llm = build_role_models(models, seed=seed)["critic"]
        for sname, summary in summaries.items():
            for label, schema in (("today", today), ("required", required)):
                msgs = [SystemMessage(critic.CRITIC_SYSTEM), HumanMessage(f"Results so far:\n{summary}\n\nWhat next?")]
                t = time.time()
                try:
                    v, raw, usage = ask_structured(llm, msgs, schema)
                    out = dict(decision=v.decision, parent=v.parent_id, edits=[e.model_dump(mode="json") if hasattr(e, "model_dump") else e for e in (getattr(v, "edits", None) or [])], refused=v.refused)
                except Exception as e:
                    out = dict(error=str(e)[:200])
                print(json.dumps(dict(seed=seed, summary=sname, schema=label, s=round(time.time() - t), **out)), flush=True)
