"""`render_contract`: the text the coder is given. A pure function of the contract's fields, so the same
contract always renders to the same string and every number in it is the number the checks enforce."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capnas.contracts.contract import Contract

_STAGE_TITLES = {
    "static": "Checked by reading the source (nothing runs until these pass)",
    "probe": "Checked by running the model on a tiny synthetic batch in a sandbox",
    "sandbox": "Checked by the sandbox's limits",
}


def render_contract(contract: Contract) -> str:
    b, c, h, w = contract.input_shape
    ids = contract.special_ids
    budgets = contract.budgets
    hyper = ", ".join(f"{k}={v:g}" for k, v in contract.probe_hyperparameters.items())
    lines = [
        f"# Contract {contract.name} (version {contract.version})",
        "",
        contract.summary,
        "",
        "## API",
        "",
        "Write one Python module that defines, at module level:",
        "",
        "- `supported_hyperparameters()` returning a `set[str]` of hyperparameter names.",
        "- `class Net(nn.Module)` with:",
        "  - `__init__(self, in_shape, out_shape, prm, device)`:",
        f"    `in_shape = ({b}, {c}, {h}, {w})` (B, C, H, W; B is nominal, accept any batch size),",
        f"    `out_shape = ({contract.vocab_size},)` (vocab_size), `prm` a dict with every declared hyperparameter",
        f"    plus `max_len` (int, {contract.max_len}: caption length in tokens, BOS and EOS included).",
        "    `device` is a `torch.device`; the model moves itself to it.",
        "  - `train_setup(self, prm)`: builds the optimizer and the loss (cross-entropy ignoring PAD).",
        "  - `learn(self, train_data) -> float`: one pass over `(images, captions)` batches already on the device;",
        f"    `images` float32 `[B, {c}, {h}, {w}]` in [0, 1]; `captions` int64 `[B, Ncap, {contract.max_len}]`, each row",
        "    `BOS w1 .. wk EOS PAD ..`. Train on all Ncap references. Return the mean loss as a Python float.",
        "  - `forward(self, images, captions=None)`:",
        f"    with `captions` int64 `[B, {contract.max_len}]`: logits `[B, {contract.max_len - 1}, {contract.vocab_size}]`"
        " predicting `captions[:, 1:]` from `captions[:, :-1]` (teacher forcing);",
        f"    without: generated ids int64 `[B, T]`, `1 <= T <= {contract.max_len}`, no leading BOS, every row holds an EOS",
        "    and only PAD after it.",
        "",
        "## Fixed values",
        "",
        f"- Special ids: PAD={ids.pad}, BOS={ids.bos}, EOS={ids.eos}, UNK={ids.unk}; vocabulary size {contract.vocab_size}.",
        f"- Budgets: at most {budgets.max_params:,} parameters; at most {budgets.max_latency_ms:g} ms inference per image;"
        f" the whole probe within {budgets.max_probe_s:g} s and {budgets.max_memory_mb} MB.",
        f"- Allowed imports: {', '.join(contract.allowed_imports)} (and submodules),"
        f" except {', '.join(contract.forbidden_imports)}.",
        f"- Never use: {', '.join(contract.forbidden_attributes)}.",
        f"- Forbidden builtins: {', '.join(n for names in contract.forbidden_builtins.values() for n in names)}.",
        "- Hyperparameter values are floats. The probe passes prm with "
        f"{hyper}, any other declared name = {contract.probe_hyperparameter_default:g}, plus max_len.",
        "  Architecture sizes are not hyperparameters: fix them in the code.",
        "- The probe seeds torch, builds Net, calls train_setup, runs learn on two tiny batches, then calls",
        "  net.eval() and forward under torch.no_grad().",
        "",
        "## Clauses",
        "",
        "Each failed clause comes back as a violation with its code, the line and the hint.",
    ]
    for stage, title in _STAGE_TITLES.items():
        clauses = [cl for cl in contract.clauses if cl.stage == stage]
        if not clauses:
            continue
        lines += ["", f"### {title}", ""]
        for clause in clauses:
            lines.append(f"- {clause.code}: {clause.rule}")
            lines.append(f"  Hint: {clause.hint}")
    return "\n".join(lines) + "\n"
