"""The graph's nodes. Each is small: read state, call one agent or tool, write the journal, return a
small state update. Nodes that spend (LLM calls, training) are idempotent on resume: LLM answers are
replayed from the journal by key, candidates are keyed by round, training continues from its checkpoint."""

from __future__ import annotations

import contextvars
import json
import random
import time
from pathlib import Path
from typing import Any, Callable

from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from capnas.agents import coder, coder_tools, critic, planner
from capnas.agents.usage import BudgetExceeded, cost_usd
from capnas.graph import coder_turn
from capnas.graph import refine
from capnas.graph.context import Context
from capnas.graph.final_test import score_best_on_test
from capnas.graph.journal import Candidate, fidelity_record, normalized_code_hash
from capnas.graph.routing import after_validation
from capnas.graph.services import RunServices, services_for
from capnas.graph.state import CandidateState, RunState
from capnas.tools.design import archspec
from capnas.tools.jobs.slots import estimate_gpu_mb
from capnas.tools.task import Task


def _svc(state: RunState | CandidateState, runtime: Runtime[Context]) -> RunServices:
    return services_for(runtime.context, state["run_id"], state["task"])


def _emit(runtime: Runtime[Context], event: str, **fields: Any) -> None:
    writer = getattr(runtime, "stream_writer", None)
    if writer is not None:
        writer({"event": event, **fields})


def _emitter(runtime: Runtime[Context], event: str, **fixed: Any) -> Callable[[dict[str, Any]], None]:
    """An `_emit` callable from other threads (the trainer's event thread): LangGraph's stream writer finds
    its run through context variables, so each call runs in a copy of this node's context."""
    node_context = contextvars.copy_context()

    def emit(fields: dict[str, Any]) -> None:
        node_context.copy().run(_emit, runtime, event, **fixed, **fields)

    return emit


def _ask(svc: RunServices, role: str, key: str, call: Callable[[], tuple[Any, str, dict]],
         prompt: str, candidate_id: str | None = None) -> tuple[Any, bool]:
    """Run one LLM call, or replay its recorded answer after a crash. Returns (parsed, replayed)."""
    recorded = svc.journal.recorded_response(svc.run_id, key)
    if recorded is not None:
        return json.loads(recorded)["parsed"], True
    parsed, raw, usage = call()
    config = svc.ctx.models.for_role(role)
    data = parsed.model_dump(mode="json") if hasattr(parsed, "model_dump") else parsed
    svc.journal.log_llm_call(
        svc.run_id, role, prompt, json.dumps({"raw": raw, "parsed": data}), candidate_id=candidate_id, key=key,
        input_tokens=usage.get("input_tokens", 0), output_tokens=usage.get("output_tokens", 0),
        cost_usd=cost_usd(usage, config.price_in_per_mtok, config.price_out_per_mtok),
    )
    return data, False


def _prompt_text(messages) -> str:
    return "\n\n".join(f"[{m.type}]\n{m.content}" for m in messages)


def _stop(reason: str) -> dict[str, Any]:
    return {"stop_reason": reason}


# -- planner ------------------------------------------------------------------------------------------
def planner_node(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = runtime.context
    update: dict[str, Any] = {}
    if "started_at" not in state:  # first visit: the task
        update["started_at"] = time.time()
        update["round"] = 0
        task = Task(**state.get("task", {}))
        svc = services_for(ctx, state["run_id"], task.model_dump())
        if svc.journal.get_run(state["run_id"]) is None:  # invoked as a plain Runnable, not through the runner
            svc.journal.create_run(task.model_dump(), ctx.to_record(), run_id=state["run_id"])
        evidence: dict[str, Any] | None = None  # None: no requirement was drafted (no LLM, or none given)
        if state.get("requirement") and ctx.models is not None:
            try:
                data, replayed = _ask(svc, "planner", "planner:task", lambda: planner.draft_task(
                    svc.models["planner"], state["requirement"], task), state["requirement"])
            except BudgetExceeded:
                return {**update, "task": task.model_dump(), **_stop("token_budget")}
            except ValueError as err:  # (draft_task answers without the LLM when it fails): the run's settings
                svc.journal.log_event(state["run_id"], "planner_fallback", {"error": str(err)[:500]})
                data, replayed = {"task": task.model_dump()}, True
            # (journals before grounded drafts recorded the bare task)
            drafted = planner.Drafted(**data) if "task" in data else planner.Drafted(task=Task(**data))
            task, evidence = drafted.task, drafted.evidence()
            if not replayed:  # every changed field with the words it was read from, before anything runs
                svc.journal.log_event(state["run_id"], "task_evidence", {"changed": evidence, "ignored": drafted.ignored})
        if ctx.confirm_task:
            # A person confirms or edits the task; the value they resume with replaces it.
            answer = interrupt({"question": "confirm_task", "task": task.model_dump(), "changed": evidence or {}})
            if isinstance(answer, dict) and answer.get("task"):
                task = Task(**answer["task"])
        svc.journal.update_run_task(state["run_id"], task.model_dump())
        update["task"] = task.model_dump()
        _emit(runtime, "task", task=task.model_dump(), changed=evidence)

    task = Task(**update.get("task", state.get("task", {})))
    round_index = update.get("round", state.get("round", 0))
    svc = services_for(ctx, state["run_id"], task.model_dump())
    if svc.journal.paused(svc.run_id):  # between candidates: wait for whoever drives the run to resume it
        interrupt({"question": "paused", "round": round_index})
        svc.journal.request(svc.run_id, "resume")
    if svc.journal.stop_requested(svc.run_id):
        return {**update, **_stop("stopped_by_user")}  # also a stop sent while paused: no further candidate
    plan = planner.default_plan(task, round_index)
    if ctx.generation != "random" and ctx.models is not None and round_index > 0:
        board = critic.summarize(_rows(svc), task.objective)
        try:
            data, _ = _ask(svc, "planner", f"planner:round{round_index}", lambda: planner.plan_round(
                svc.models["planner"], task, board, state.get("feedback", "")), board)
            plan = planner.sanitize(planner.RoundPlan(**data), task)
        except BudgetExceeded:
            return {**update, **_stop("token_budget")}
        except ValueError as err:  # no usable plan, re-asks included: the default rotation plans this round
            svc.journal.log_event(svc.run_id, "planner_fallback", {"round": round_index, "error": str(err)[:500]})
    rows = _rows(svc)
    width = min(ctx.concurrency, _budgets(svc).max_candidates - len(rows))
    if width <= 0:
        return {**update, **_stop("max_candidates")}
    keep = _families_of(svc, state.get("parent_id") or _best_id(svc)) if state.get("decision") == "refine" else None
    pairs = planner.assign(plan, width, _tried(rows), keep, fallback=planner.default_plan(task, round_index))
    ids = [candidate_id(state["run_id"], round_index, slot) for slot in range(width)]
    svc.prepared, svc.contract  # noqa: B018 - build the shared data once, before the branches read it at once
    # random generation samples families itself (uniformly over what the task allows): no assignment to show
    random_draws = runtime.context.generation == "random"
    _emit(runtime, "round", round=round_index, plan=plan.model_dump(), candidates=ids,
          families=None if random_draws else pairs, random=random_draws)
    return {**update, "plan": plan.model_dump(), "round_candidates": ids, "assignments": [list(p) for p in pairs],
            "first_index": len(rows)}


def candidate_id(run_id: str, round_index: int, slot: int = 0) -> str:
    """Candidate ids are unique across the journal: `<run>-r007` for a round's first candidate, `<run>-r007-1`,
    `-2`, ... for the others a round works on at once."""
    return f"{run_id}-r{round_index:03d}" + (f"-{slot}" if slot else "")


def _tried(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Family pairs a run's candidates (journal rows) have already spent a candidate on (any outcome but a
    rejected duplicate)."""
    return {archspec.families(r["spec"]) for r in rows if r.get("spec") and r["status"] != "duplicate"}


def _best_id(svc: RunServices) -> str | None:
    """The leader, which a refine with no parent named starts from."""
    board = svc.journal.leaderboard(svc.run_id, svc.task.objective)
    return board[0].candidate_id if board else None


def _families_of(svc: RunServices, cid: str | None) -> tuple[str, str] | None:
    existing = _existing(svc, cid) if cid else None
    spec = existing.spec if existing else None
    return archspec.families(spec) if spec else None


def _rows(svc: RunServices) -> list[dict[str, Any]]:
    """The run's candidates as plain dicts, for the agents (which take rows, not the journal's types)."""
    return [c.to_dict() for c in svc.journal.candidates(svc.run_id)]


# -- coder --------------------------------------------------------------------------------------------
def coder_node(state: CandidateState, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx, svc = runtime.context, _svc(state, runtime)
    cid, repairs = state["candidate_id"], state.get("repairs", 0)
    existing = _existing(svc, cid)
    if existing is not None and existing.repairs >= repairs:
        return {}  # resumed: this attempt's code is already in the journal
    _emit(runtime, "candidate", candidate_id=cid, status="generating")
    plan = planner.RoundPlan(**state["plan"])
    families = tuple(state["families"]) if state.get("families") else None
    spec, derived = None, None
    if ctx.generation == "random":
        # The baseline ignores the planner's assignment: a draw depends only on the seed, the candidate's index,
        # its repair round (a repair of a random candidate is a fresh draw) and the families the task allows, so
        # runs at any concurrency draw the same candidates.
        code, spec = _random_candidate(svc, state.get("index", state["round"]), ctx.seed, svc.task, repairs)
        if code is None:
            return {"stops": ["search_space_exhausted"]}
    elif ctx.models is None:
        raise ValueError(f"generation {ctx.generation!r} needs LLMs: set Context.models (per-role endpoints), or use "
                         "generation='random' to search without one")
    elif (derived := refine.refined_child(svc, ctx, state)) is not None:
        code, spec = derived.code, derived.spec  # the parent with the critic's edits, or mutated: no coder call
    else:
        snippets = coder.choose_snippets([families[0]], [families[1]], ctx.k_snippets) if families else \
            coder.choose_snippets(plan.encoders, plan.decoders, ctx.k_snippets)
        board = critic.summarize([r for r in _rows(svc) if r["status"] == "trained"], svc.task.objective)
        repair = None
        if repairs and existing is not None:
            repair = {"code": existing.code, "spec": json.dumps(existing.spec),
                      "violations": existing.violations or _duplicate(existing)}
        brief = plan.rationale + (f"\nThis candidate uses the {families[0]} encoder and the {families[1]} decoder."
                                  if families else "")
        if svc.task.frozen_encoders:
            brief += "\nThe task keeps pretrained encoders frozen (no gradients, BatchNorm in eval mode)."
        messages = coder.coder_messages(ctx.generation, svc.contract, snippets, board, state.get("feedback", ""),
                                        plan=brief.strip(), repair=repair,
                                        refine=refine.required_changes(svc, state) if ctx.generation == "code" else None)
        tools = _coder_executors(svc, runtime, state, cid) if _coder_has_tools(ctx) else None
        try:
            data, _ = _ask(svc, "coder", f"coder:{cid}:{repairs}",
                           lambda: _coder_call(ctx.generation, svc, messages, families, tools, ctx.coder_tool_calls),
                           _prompt_text(messages), cid)
        except BudgetExceeded:
            return {"stops": ["token_budget"]}
        except ValueError as err:  # the model never produced a usable answer: record, do not retry forever
            data = {"code": "", "spec": None, "error": str(err)}
        code, spec = data["code"], data.get("spec")
        turn = data.get("tools") or {}
        if turn.get("ended") in ("tool_budget", "stopped"):  # no answer: the candidate ends, unmutated; the run goes on
            _record_candidate(svc, runtime, state, cid, code, spec, repairs, existing)
            return _no_submit(svc, runtime, cid, turn["reason"])
        derived = refine.mutation_if_duplicate(svc, ctx, state, code, spec)
        if derived is not None:  # the coder gave an earlier candidate again: a mutation of it instead, no re-ask
            code, spec = derived.code, derived.spec
    return _record_candidate(svc, runtime, state, cid, code, spec, repairs, existing, derived)


def _coder_has_tools(ctx: Context) -> bool:
    """Code mode gives the coder its tools; spec mode only when asked (small local models cannot drive a loop)."""
    return ctx.coder_tool_calls > 0 and (ctx.generation == "code" or (ctx.generation == "spec" and ctx.spec_tools))


def _coder_executors(svc: RunServices, runtime: Runtime[Context], state: CandidateState, cid: str):
    """The coder's tools for one attempt: the validator's own probe, a snippet job, the journal, the run's budgets."""
    def stop() -> str | None:
        if svc.journal.stop_requested(svc.run_id):
            return "a person asked the run to stop"
        if "started_at" in state and time.time() - state["started_at"] >= _budgets(svc).time_budget * 60:
            return "the run's time budget is spent"
        return None

    return coder_turn.executors(svc, cid, probe=lambda code: _probe(svc, code, svc.threads), stop=stop,
                                emit=lambda **fields: _emit(runtime, "coder_tool", candidate_id=cid, **fields))


def _no_submit(svc: RunServices, runtime: Runtime[Context], cid: str, reason: str) -> dict[str, Any]:
    """A coder that stopped calling tools without submitting: the candidate is invalid with that reason, and no
    repair round is spent on it (its own checks were its repairs)."""
    svc.journal.update_candidate(cid, status="invalid", contract=coder_turn.no_submit_violation(reason))
    svc.journal.log_event(svc.run_id, "coder_no_submit", {"reason": reason}, cid)
    _emit(runtime, "candidate", candidate_id=cid, status="invalid", violations=[coder_turn.NO_SUBMIT["code"]])
    return {"repairs": runtime.context.max_repairs}


def _duplicate(cand: Candidate) -> list[dict[str, Any]]:
    """A duplicate's 'violation' for the repair prompt (it has no contract report: it was never validated)."""
    if cand.status != "duplicate":
        return []
    return [{"code": "DUP-001", "line": None, "message": f"this candidate is {cand.exit_reason}, which was "
             "already tried; it will not be trained again.", "hint": "choose a different architecture or options"}]


def _coder_call(generation: str, svc: RunServices, messages, families,
                tools: coder_tools.Executors | None = None, max_calls: int = 0):
    """(answer, raw reply, usage) of one coder call (with `tools`, a tool turn of at most `max_calls` calls)."""
    model = svc.models["coder"]
    if tools is not None:
        return coder_tools.write_with_tools(model, messages, generation, tools, max_calls, families,
                                            svc.task.frozen_encoders)
    if generation == "spec":
        spec, code, raw, usage = coder.write_spec(model, messages, families, svc.task.frozen_encoders)
        return {"code": code, "spec": spec.model_dump(mode="json")}, raw, usage
    code, raw, usage = coder.write_code(model, messages)
    return {"code": code, "spec": None}, raw, usage


def _random_candidate(svc: RunServices, index: int, seed: int, task: Task,
                      repairs: int = 0) -> tuple[str | None, dict | None]:
    """Sample specs until one is new to this run (bounded). Seeded by the candidate's index in the run and its
    repair round, so a resumed run draws the same ones, and so does a run with another concurrency."""
    for attempt in range(50):
        # a first draw keeps the key it had before redraws existed, so earlier runs' candidates stay reproducible
        key = f"{seed}:{index}:{attempt}" if repairs == 0 else f"{seed}:{index}:redraw{repairs}:{attempt}"
        spec = archspec.sample(random.Random(key), task.families)
        spec = archspec.frozen(spec) if task.frozen_encoders else spec
        code = archspec.render(spec)
        if svc.journal.find_by_hash(svc.run_id, normalized_code_hash(code)) is None:
            return code, spec.model_dump(mode="json")
    return None, None


def _existing(svc: RunServices, cid: str) -> Candidate | None:
    try:
        return svc.journal.get_candidate(cid)
    except KeyError:
        return None


def _record_candidate(svc, runtime, state, cid, code, spec, repairs, existing,
                      derived: refine.Derived | None = None) -> dict[str, Any]:
    describe = archspec.ArchSpec(**spec).describe() if spec else "LLM-written module"
    parent_id = derived.parent_id if derived else state.get("parent_id")
    if existing is None:
        cand = svc.journal.add_candidate(svc.run_id, code, round=state["round"], mode=runtime.context.generation,
                                         parent_id=parent_id, spec=spec, plan=describe, candidate_id=cid)
    elif code and normalized_code_hash(code) == normalized_code_hash(existing.code):
        # The repair changed nothing: its verdict would be the same, so spend no probe on it and no more repairs.
        svc.journal.update_candidate(cid, repairs=repairs)
        svc.journal.log_event(svc.run_id, "repair_unchanged", {"repairs": repairs}, cid)
        _emit(runtime, "candidate", candidate_id=cid, status=existing.status, plan=describe, unchanged=True)
        return {"repairs": runtime.context.max_repairs}
    else:
        cand = svc.journal.replace_code(cid, code, spec=spec, plan=describe, repairs=repairs)
        if derived:  # a repair's duplicate, mutated: the child of the candidate it duplicated
            svc.journal.update_candidate(cid, parent_id=parent_id)
    if derived is not None:  # how the child was made: edits applied or a mutation (fields, parent, why)
        svc.journal.log_event(svc.run_id, derived.event, derived.payload, cid)
    if not code:
        svc.journal.update_candidate(cid, status="invalid", contract={"ok": False, "violations": [
            {"code": "LLM-001", "clause": "The coder returns one module", "message": "the coder returned no usable answer",
             "line": None, "hint": "check the model endpoint, its output token limit and the prompt size"}]})
    _emit(runtime, "candidate", candidate_id=cid, status=svc.journal.get_candidate(cid).status, plan=describe,
          duplicate_of=cand.exit_reason if cand.status == "duplicate" else None)
    return {}


# -- validator ----------------------------------------------------------------------------------------
def validator_node(state: CandidateState, runtime: Runtime[Context]) -> Command:
    """Static checks, then the sandboxed probe; routes to training, to a repair, or ends the branch."""
    ctx, svc = runtime.context, _svc(state, runtime)
    cid, repairs = state["candidate_id"], state.get("repairs", 0)
    cand = svc.journal.get_candidate(cid)
    status = cand.status
    if status == "generated":  # else: a duplicate, or validated before a crash
        _emit(runtime, "candidate", candidate_id=cid, status="validating")
        report = _probe(svc, cand.code, svc.threads)
        if ctx.concurrency > 1 and {v.code for v in report.violations} == {"BUD-002"}:
            # Latency is the one clause a busy machine can fail on its own (other jobs, the local LLM): measure
            # once more with every CPU slot held, before calling the candidate too slow.
            first = report.latency_ms
            report = _probe(svc, cand.code, svc.threads, exclusive=True)
            svc.journal.log_event(svc.run_id, "latency_remeasured", {"first_ms": first, "again_ms": report.latency_ms}, cid)
        status = "valid" if report.ok else "invalid"
        svc.journal.update_candidate(cid, status=status, contract=report.model_dump(mode="json"), params=report.params)
        _emit(runtime, "candidate", candidate_id=cid, status=status,
              violations=[v.code for v in report.violations], params=report.params)
    goto = after_validation(status, repairs, ctx.max_repairs)
    return Command(goto=END if goto == "done" else goto, update={"repairs": repairs + 1} if goto == "coder" else {})


def _probe(svc: RunServices, code: str, threads: int | None, exclusive: bool = False):
    from capnas.tools.jobs.validation import validate_code

    cores = svc.slots.cpus_total if exclusive else (threads or 1)
    with svc.slots.job(svc.ctx.device, threads=cores) as device:
        return validate_code(code, svc.contract, device, runner=svc.runner, threads=threads,
                             scratch_root=svc.scratch_dir if svc.ctx.executor == "ray" else None)


# -- trainer and evaluator ----------------------------------------------------------------------------
def trainer_node(state: CandidateState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Train a valid candidate in the sandbox; its val metrics come from the evaluator inside `train_candidate`.
    After a crash the same run dir resumes from the last committed epoch, a finished job is not redone. With a
    rung schedule it trains the first rung (the promoter takes the promising further); a child of a trained
    parent starts from the parent's weights (`inherit_weights`)."""
    svc = _svc(state, runtime)
    cid = state["candidate_id"]
    cand = svc.journal.get_candidate(cid)
    if cand.status != "valid":
        return {}  # already trained (resume) or not trainable
    budgets = _budgets(svc)  # with a person's changes (chat /budget), as the planner and the critic read them
    spec = archspec.ArchSpec(**cand.spec) if cand.spec else None
    epochs = budgets.rungs[0] if budgets.rungs else min(spec.epochs, budgets.epochs) if spec else budgets.epochs
    parent = _existing(svc, cand.parent_id) if runtime.context.inherit_weights and cand.parent_id else None
    inherit = parent_weights(parent) if parent is not None else None
    outcome = train_job(svc, runtime, cand, state["started_at"], epochs=epochs, threads=svc.threads,
                        inherit=inherit)
    # A job killed from outside while this run lives (a person, the OOM killer, a lost Ray worker) is one failed
    # candidate: the run goes on. (When the run itself dies, nothing is recorded and a resume continues the job.)
    status = "trained" if outcome.ok else "failed"
    fidelity = fidelity_record(budgets.rungs, 0, [{"rung": 0, "epochs": epochs, "metrics": outcome.metrics}],
                               outcome.exit_reason)
    svc.journal.update_candidate(
        cid, status=status, exit_reason=outcome.exit_reason,
        curve=[p.model_dump(mode="json") for p in outcome.curve], metrics=outcome.metrics or None,
        samples=[s.model_dump(mode="json") for s in outcome.samples], hparams=outcome.hparams,
        params=outcome.params, artifacts=str(outcome.run_dir),
        fidelity=fidelity if budgets.rungs and outcome.ok else None,
        inherited={"from": cand.parent_id, **outcome.inherited} if outcome.inherited else None,
    )
    if outcome.error or not outcome.finished:
        svc.journal.log_event(svc.run_id, "train_error", {"exit_reason": outcome.exit_reason,
                                                          "error": outcome.error or "killed from outside"}, cid)
    _emit(runtime, "candidate", candidate_id=cid, status=status, metrics=outcome.metrics,
          exit_reason=outcome.exit_reason)
    return {}


def train_job(svc: RunServices, runtime: Runtime[Context], cand: Candidate, started_at: float, *, epochs: int,
              threads: int | None, inherit: Path | None = None, spent_s: float = 0.0):
    """One sandboxed training job for a candidate, holding its slot: its first rung (or all its epochs), or a
    promotion to the next rung (`spent_s`: training seconds its earlier rungs spent, which count against the
    job's time budget). Each call may train `train_time_s` more seconds, never past the run's time budget.
    `threads`: torch threads (and so cores held), the run's share per job unless the job may take more."""
    from capnas.tools.jobs.training import train_candidate

    cid, budgets, ctx = cand.candidate_id, _budgets(svc), runtime.context
    remaining_s = budgets.time_budget * 60 - (time.time() - started_at)
    spec = archspec.ArchSpec(**cand.spec) if cand.spec else None
    hparams = spec.prm() if spec else {}
    batch_size = spec.batch_size if spec else 32
    train_time_s = spent_s + max(10.0, min(budgets.train_time_s, remaining_s))
    with svc.slots.job(ctx.device, threads, estimate_gpu_mb(cand.params, batch_size)) as device:
        _emit(runtime, "candidate", candidate_id=cid, status="training")
        features = _stored_features(svc, runtime, spec, device, cid)
        svc.journal.log_event(svc.run_id, "train_call", {"remaining_s": round(remaining_s, 1),
                                                         "train_time_s": round(train_time_s, 1), "device": device,
                                                         "threads": threads, "features": features,
                                                         "epochs": epochs}, cid)
        return train_candidate(
            cand.code, svc.prepared, svc.dataset, svc.artifacts_dir(cid), hparams=hparams,
            epochs=epochs, batch_size=batch_size, train_time_s=train_time_s, seed=ctx.seed,
            device=device, threads=threads, evaluator=svc.evaluator, runner=svc.runner,
            on_event=lambda e, emit=_emitter(runtime, "train", candidate_id=cid): emit(_train_fields(e)),
            features=features, inherit=inherit, keep_checkpoint=bool(budgets.rungs),
        )


def parent_weights(parent: Candidate) -> Path | None:
    """The best weights of a trained parent's job, or None (not trained, or its job kept none)."""
    from capnas.tools.jobs.training import stored_result

    if parent.status != "trained" or not parent.artifacts:
        return None
    result = stored_result(parent.artifacts)
    return result.best_weights if result is not None and result.best_weights is not None else None


def _stored_features(svc: RunServices, runtime: Runtime[Context], spec: archspec.ArchSpec | None, device: str,
                     cid: str) -> str | None:
    """The key of stored frozen-encoder tokens this candidate trains on (extracted by the first job that needs
    them, on the device it holds), or None: images. A failed extraction costs the speed-up, not the candidate."""
    from capnas.tools.data.features import FeaturesError, cached_encoder, ensure_features

    encoder = cached_encoder(spec)
    if encoder is None:
        return None
    try:
        progress = _emitter(runtime, "progress")  # the job's events arrive on the launcher's reader thread
        key, extracted = ensure_features(svc.prepared, encoder, device=device, threads=svc.threads,
                                         runner=svc.runner, scratch_root=svc.scratch_dir,
                                         on_progress=lambda e: progress({k: v for k, v in e.items() if k != "event"}))
    except FeaturesError as e:
        svc.journal.log_event(svc.run_id, "features_failed", {"encoder": encoder, "error": str(e)[-2000:]}, cid)
        return None
    if extracted is not None:
        svc.journal.log_event(svc.run_id, "features_extracted", extracted, cid)
        _emit(runtime, "features", candidate_id=cid, key=key, seconds=extracted.get("wall_s"))
    return key


def _train_fields(event: dict[str, Any]) -> dict[str, Any]:
    """A trainer event as a flat, small progress update (the harness's own 'event' key becomes 'phase')."""
    return {("phase" if k == "event" else k): v for k, v in event.items() if k not in ("candidate_id",)}


def evaluator_node(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Scores come from the evaluator only; here they are read back from the journal to update `best`."""
    svc = _svc(state, runtime)
    objective = svc.task.objective
    board = svc.journal.leaderboard(svc.run_id, objective)
    if not board:
        return {}
    top = board[0]
    return {"best": {"candidate_id": top.candidate_id, "metrics": top.metrics}}


# -- critic -------------------------------------------------------------------------------------------
def critic_node(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Joins the round's branches: reads every result so far, writes one feedback and decision for the next round."""
    ctx, svc = runtime.context, _svc(state, runtime)
    cid = state["round_candidates"][0]  # the round's key: one critique per round
    update: dict[str, Any] = {"round": state["round"] + 1}
    if state.get("stops"):  # a branch ran out of tokens or of new specs: no critique can change that
        update.update(decision="stop", feedback="", parent_id=None, stop_reason=state["stops"][0])
    elif ctx.generation == "random" or ctx.models is None:
        update.update(decision="explore", feedback="", parent_id=None)
    else:
        summary = critic.summarize(_rows(svc), svc.task.objective)
        space = refine.edit_space(svc.task) if ctx.critic_edits else None
        try:
            data, replayed = _ask(svc, "critic", f"critic:{cid}",
                                  lambda: critic.critique(svc.models["critic"], summary, space), summary)
        except BudgetExceeded:
            return {**update, **_stop("token_budget")}
        except ValueError as err:  # no usable answer, re-asks included: the leader is mutated (or a plain explore)
            data, replayed = refine.unusable_critique(svc, ctx, err), False
        update.update(feedback=data["feedback"], decision=data["decision"], parent_id=data.get("parent_id"),
                      **refine.critic_update(svc, data, replayed))
    reason = update.get("stop_reason") or budget_exhausted(svc, state, update)
    if reason:
        update["stop_reason"] = reason
    _emit(runtime, "critic", candidate_id=cid, candidates=state["round_candidates"], decision=update["decision"], feedback=update["feedback"],
          edits=update.get("edits"))
    return update


def budget_exhausted(svc: RunServices, state: RunState, update: dict[str, Any]) -> str | None:
    budgets = _budgets(svc)
    if svc.journal.stop_requested(svc.run_id):
        return "stopped_by_user"
    if len(_rows(svc)) >= budgets.max_candidates:
        return "max_candidates"
    if time.time() - state["started_at"] >= budgets.time_budget * 60:
        return "time_budget"
    if svc.models is not None and svc.ledger.exhausted():
        return "token_budget"
    if update.get("decision") == "stop" and len(svc.journal.leaderboard(svc.run_id)) >= max(1, budgets.min_candidates):
        return "critic"
    return None


def _budgets(svc: RunServices):
    """The task's budgets with the changes a person made during the run."""
    return svc.task.budgets.model_copy(update=_budget_changes(svc))


def _budget_changes(svc: RunServices) -> dict[str, Any]:
    """Budgets a person changed during the run (the latest value of each wins)."""
    changes: dict[str, Any] = {}
    for r in svc.journal.requests(svc.run_id):
        if r["action"] == "budget":
            changes.update({k: r[k] for k in ("max_candidates", "time_budget") if r.get(k) is not None})
    return changes


# -- reporter -----------------------------------------------------------------------------------------
def reporter_node(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    from capnas.tools.report.summary import write_run_summary

    svc = _svc(state, runtime)
    reason = state.get("stop_reason") or "finished"
    status = "finished" if reason in ("max_candidates", "critic", "finished", "stopped_by_user") else "stopped"
    board = svc.journal.leaderboard(svc.run_id, svc.task.objective)
    best = {"candidate_id": board[0].candidate_id, "metrics": board[0].metrics} if board else None
    if runtime.context.final_test and best is not None:  # the search has ended: the test split may be read now
        _emit(runtime, "test", candidate_id=best["candidate_id"], phase="start")
        best["test_metrics"] = (score_best_on_test(svc) or {}).get("metrics")
        _emit(runtime, "test", candidate_id=best["candidate_id"], phase="done", metrics=best["test_metrics"])
    write_run_summary(svc.journal, svc.run_id, svc.task.objective, Path(runtime.context.run_dir) / "runs" / svc.run_id)
    svc.journal.set_run_status(svc.run_id, status, reason)
    _emit(runtime, "done", status=status, stop_reason=reason, best=best)
    return {"status": status, "best": best, "stop_reason": reason}
