"""Does the embedded critic send typed edits? Today's schema (edits optional) against edits required (>= 1).

    critic_edits.py JOURNAL RUN_ID [0.5b|1.5b]    # e.g. WORKDIR/workspace/journal.sqlite random-s0 0.5b
"""
import json
import sys
import time

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import Field, create_model

from capnas.agents import critic
from capnas.agents.llm import ask_structured, build_role_models
from capnas.embedded.server import embedded_models
from capnas.graph.journal import Journal
from capnas.tools.design.edits import MAX_EDITS, EditSpace, edit_type

journal, run_id = sys.argv[1], sys.argv[2]
model = sys.argv[3] if len(sys.argv) > 3 else "0.5b"
rows = [c.to_dict() for c in Journal(journal).candidates(run_id)]
# The flickr8k-epochs recipe's families, frozen encoders: what `refine.edit_space` gives that run's task.
space = EditSpace(("efficientnet_lite0", "lstm", "gru", "transformer"), True)
today = critic.critique_model(space)
required = create_model("Critique", __base__=critic.Critique, __doc__=critic.Critique.__doc__,
                        edits=(list[edit_type(space)], Field(..., min_length=1, max_length=MAX_EDITS,
                               description=today.model_fields["edits"].description)))
required.edit_space = space
print("required fields:", today.model_json_schema()["required"], "|", required.model_json_schema()["required"])
summaries = {"round1": critic.summarize([r for r in rows if r["round"] == 0], "cider"),
             "all4": critic.summarize(rows, "cider")}
messages = {name: [SystemMessage(critic.CRITIC_SYSTEM), HumanMessage(f"Results so far:\n{text}\n\nWhat next?")]
            for name, text in summaries.items()}
with embedded_models(model, n_threads=1) as (models, desc):
    print(desc)
    for seed in (0, 1, 2):
        llm = build_role_models(models, seed=seed)["critic"]
        for name, msgs in messages.items():
            for label, schema in (("today", today), ("required", required)):
                t = time.time()
                try:
                    v, _, _ = ask_structured(llm, msgs, schema)
                    out = dict(decision=v.decision, parent=v.parent_id, refused=v.refused,
                               edits=[e.model_dump(mode="json") for e in v.edits])
                except ValueError as e:  # no answer that validates, re-asks included
                    out = dict(error=str(e)[:200])
                print(json.dumps(dict(seed=seed, summary=name, schema=label, s=round(time.time() - t), **out)),
                      flush=True)
