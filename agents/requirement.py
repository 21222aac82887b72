"""The deterministic half of reading a requirement: what a person's words say about the task, each value with the
words it was read from (its evidence). No LLM, no LangChain: the planner (`capnas.agents.planner`) asks the LLM
only what this cannot read, and keeps its answer only where `find_quote` finds the evidence in the text.

- Quantities with units (parameters, latency, time, candidates, epochs, image size): numbers in digits (`1M`,
  `2.5 million`, `4e6`, `3,000,000`) or in words (`two hundred thousand`, `one hour`, `half an hour`). Spelled
  numbers are found by text2num (`find_numbers`, which keeps token positions, so the evidence is the person's own
  words); the units, scales and comparators are the tables below. A number with no unit is never read
  ("a 5 MB model" sets nothing), nor is a lower bound read as a budget ("at least 1M parameters").
- Families by name and common synonyms (`pretrained EfficientNet`, `small CNN`, `recurrent decoders`), with
  negations ("not transformers", "instead of a CNN", "rather than freezing it"); "only" and "nothing else" need
  no rule, as a named family is already a whitelist of its kind.
- The objective by metric name, and whether pretrained encoders stay frozen.
Descriptive words ("attention-based", "for phones", "small") are left alone: no table entry means no value."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from text_to_num import find_numbers

from capnas.tools.task import family_names


@dataclass(frozen=True)
class Reading:
    """One value read from the requirement, and the words it was read from."""

    value: Any
    evidence: str
    span: tuple[int, int]  # character offsets of the evidence in the requirement


@dataclass
class Found:
    """Everything the deterministic reader found. `values` holds flat task fields (budgets flattened:
    `time_budget`, `max_candidates`, ...); families are kept per kind, as named and as excluded, so the planner
    can combine them with the run's own setting (a kind the person said nothing about keeps it)."""

    values: dict[str, Reading] = field(default_factory=dict)
    wanted: dict[str, list[Reading]] = field(default_factory=lambda: {"encoder": [], "decoder": []})
    excluded: dict[str, list[Reading]] = field(default_factory=lambda: {"encoder": [], "decoder": []})
    ignored: list[str] = field(default_factory=list)  # values read but out of bounds, said in one line each

    def spans(self) -> list[tuple[int, int]]:
        """Every span the reader read a value from. An LLM's evidence may not overlap one: those words are read
        already, and "a ViT encoder instead of a CNN" is no evidence for decoders."""
        readings = [*self.values.values(), *(r for kind in (self.wanted, self.excluded) for rs in kind.values() for r in rs)]
        return [r.span for r in readings]


# -- numbers ------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z]+|[^\w\s]")
_SCALE_WORDS = {"thousand", "million", "billion"}  # left as words: `_QUANT` reads "2.5 million", "a million"


class _Tok:
    """A token as text2num's `find_numbers` reads it (its Token protocol)."""

    def __init__(self, match: re.Match[str]) -> None:
        self.match = match

    def text(self) -> str:
        return self.match.group()

    def nt_separated(self, previous: _Tok) -> bool:
        return False

    def not_a_number_part(self) -> bool:
        return False


class _Digits:
    """The requirement with spelled numbers written as digits, and the way back to the person's offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        tokens = [_Tok(m) for m in _TOKEN.finditer(text)]
        pieces: list[tuple[str, int, int, bool]] = []  # (text, original start, original end, replaced)
        at = 0
        for occ in find_numbers(tokens, "en", threshold=0):
            start, end = tokens[occ.start].match.start(), tokens[occ.end - 1].match.end()
            words = text[start:end].lower()
            if occ.is_ordinal or words in _SCALE_WORDS:  # "a second", "million"
                continue
            value = int(occ.value) if float(occ.value).is_integer() else occ.value
            pieces += [(text[at:start], at, start, False), (str(value), start, end, True)]
            at = end
        pieces.append((text[at:], at, len(text), False))
        self.pieces, self.norm = [], ""
        for piece, start, end, replaced in pieces:
            self.pieces.append((len(self.norm), len(self.norm) + len(piece), start, end, replaced))
            self.norm += piece

    def original(self, start: int, end: int) -> tuple[int, int]:
        """Offsets in the requirement of `norm[start:end]`."""
        return self._at(start, first=True), self._at(end, first=False)

    def _at(self, pos: int, first: bool) -> int:
        for n0, n1, o0, o1, replaced in self.pieces:
            if n0 <= pos < n1 or (not first and n0 < pos <= n1):
                if replaced:
                    return o0 if first else o1
                return o0 + (pos - n0)
        return len(self.text)


_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:e[+-]?\d+)?"
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "mil": 1e6, "million": 1e6, "millions": 1e6,
          "b": 1e9, "bn": 1e9, "billion": 1e9}
# A quantity: "2.5", "2 and a half", "a", "half a", each with an optional scale ("k", "million").
_QUANT = (rf"(?<![\w.])(?:(?P<halfa>half\s+an?)|(?P<a>an?)|(?P<num>{_NUM})(?P<andhalf>\s+and\s+a\s+half)?)"
          rf"(?:\s*-?\s*(?P<scale>{'|'.join(sorted(_SCALE, key=len, reverse=True))})\b)?")
_BELOW = re.compile(r"(?:under|below|less\s+than|fewer\s+than|at\s+most|up\s+to|no\s+more\s+than|not\s+more\s+than|"
                    r"max(?:imum)?|within|about|around|roughly|approximately|<=?|≤)\s*$", re.I)
_ABOVE = re.compile(r"(?:at\s+least|more\s+than|over|above|min(?:imum)?|>=?|≥)\s*$", re.I)
_CLAUSE_END = re.compile(r"[.;!?]\s|[.;!?]$|,|\bbut\b|\bhowever\b|:\s")

_PARAM_UNIT = r"(?:parameters?|params?|weights)\b"
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("params", re.compile(rf"{_QUANT}\s*-?\s*{_PARAM_UNIT}", re.I)),
    # "parameters: 750 thousand", "a parameter budget of 3 million": the unit first
    ("params", re.compile(rf"(?:parameters?|params?)(?:\s+(?:count|budget|limit))?\s*(?::|=|of|under|below|at most|"
                          rf"up to|<=?)?\s*{_QUANT}(?!\s*(?:[kmg]?b|bytes|ms|s|sec|min|px|%)\b)", re.I)),
    ("ms", re.compile(rf"{_QUANT}\s*-?\s*(?:ms|msecs?|milliseconds?)\b", re.I)),
    ("seconds", re.compile(rf"{_QUANT}\s*-?\s*(?:s|secs?|seconds?)\b", re.I)),
    ("minutes", re.compile(rf"{_QUANT}\s*-?\s*(?:minutes?|mins?)\b", re.I)),
    ("hours", re.compile(rf"{_QUANT}\s*-?\s*(?:hours?|hrs?|h)\b(?P<tailhalf>\s+and\s+a\s+half)?", re.I)),
    ("days", re.compile(rf"{_QUANT}\s*-?\s*days?\b", re.I)),
    ("candidates", re.compile(rf"{_QUANT}\s+(?:candidates?|models|architectures|designs|networks|variants|"
                              rf"configurations|attempts|tries)\b", re.I)),
    ("candidates", re.compile(rf"candidates?\s*(?::|=)\s*{_QUANT}", re.I)),
    ("epochs", re.compile(rf"{_QUANT}\s*-?\s*epochs?\b", re.I)),
    ("image_size", re.compile(r"(?<![\w.])(?P<num>\d+)\s*[x×]\s*(?P<num2>\d+)(?:\s*(?:px|pixels?))?", re.I)),
    ("image_size", re.compile(r"(?<![\w.])(?P<num>\d+)\s*-?\s*(?:px|pixels?)\b", re.I)),
]
_LATENCY_CONTEXT = re.compile(r"latenc|per\s+(?:image|caption|frame|photo|picture)|inference|respon|to\s+caption", re.I)
_PER_CANDIDATE = re.compile(r"(?:per|each)\s+(?:candidate|model|network|design)|of\s+training\s+(?:per|each)|"
                            r"train\w*\s+(?:each|every)|give\s+each", re.I)
# Each field's bounds (tools/task.py): a value outside them is said, not set.
_BOUNDS = {"max_params": (1000, 10_000_000_000), "max_latency_ms": (1e-3, 1e9), "time_budget": (1e-3, 60 * 24 * 30),
           "max_candidates": (1, 1000), "epochs": (1, 500), "train_time_s": (1e-3, 1e9), "image_size": (16, 512)}


def _quantity(match: re.Match[str], kind: str) -> float | None:
    """The number a rule matched, scale applied; None where there is none. A bare "a" is a number only before a
    scale or a long time unit ("a million", "an hour", "half a second"), never in "a candidate" or "a second GRU"."""
    groups = match.groupdict()
    scale = groups.get("scale")
    if groups.get("halfa") and (scale or kind in ("seconds", "minutes", "hours", "days")):
        base = 0.5
    elif groups.get("a") and (scale or kind in ("minutes", "hours", "days")):
        base = 1.0
    elif groups.get("num"):
        try:
            base = float(groups["num"].replace(",", ""))
        except ValueError:
            return None
        base += 0.5 if groups.get("andhalf") else 0.0
    else:
        return None
    base += 0.5 if groups.get("tailhalf") else 0.0  # "an hour and a half"
    return base * (_SCALE[scale.lower()] if scale else 1.0)


def _clause(norm: str, start: int, end: int) -> str:
    """The clause around a match (between commas, semicolons, sentence ends, 'but')."""
    lo = max((m.end() for m in _CLAUSE_END.finditer(norm, 0, start)), default=0)
    hi = next((m.start() for m in _CLAUSE_END.finditer(norm, end)), len(norm))
    return norm[lo:hi]


def _read_quantities(text: str, found: Found) -> None:
    digits = _Digits(text)
    norm = digits.norm
    for kind, rule in _RULES:
        for match in rule.finditer(norm):
            value = _quantity(match, kind) if kind != "image_size" else float(match["num"])
            if value is None or value <= 0 or (kind == "image_size" and match.groupdict().get("num2")
                                                and match["num2"] != match["num"]):
                continue
            start, end = match.start(), match.end()
            before = norm[max(0, start - 30):start]
            if below := _BELOW.search(before):
                start -= len(before) - below.start()
            clause = _clause(norm, match.start(), match.end())
            target = _target(kind, value, clause, bool(_ABOVE.search(before)))
            if target is None or target[0] in found.values:
                continue
            key, number = target
            evidence_span = digits.original(start, end)
            evidence = text[evidence_span[0]:evidence_span[1]].strip()
            low, high = _BOUNDS[key]
            if not low <= number <= high:
                found.ignored.append(f"{key}: {_fmt(number)} from {evidence!r} is outside {_fmt(low)}..{_fmt(high)}")
                continue
            integer = key in ("max_params", "max_candidates", "epochs", "image_size")
            if integer and not float(number).is_integer():
                continue
            found.values[key] = Reading(int(number) if integer else number, evidence, evidence_span)


def _target(kind: str, value: float, clause: str, lower_bound: bool) -> tuple[str, float] | None:
    """Which field a quantity sets, given the words around it; None: none (a lower bound is not a budget)."""
    per_candidate = bool(_PER_CANDIDATE.search(clause))
    if kind == "params":
        return None if lower_bound else ("max_params", value)
    if kind == "ms":
        return None if lower_bound else ("max_latency_ms", value)
    if kind == "seconds" and _LATENCY_CONTEXT.search(clause) and not per_candidate:
        return None if lower_bound else ("max_latency_ms", value * 1000)
    minutes = {"seconds": 1 / 60, "minutes": 1, "hours": 60, "days": 60 * 24}.get(kind)
    if minutes is not None:
        return ("train_time_s", value * minutes * 60) if per_candidate else ("time_budget", value * minutes)
    if kind == "candidates":
        return "max_candidates", value
    if kind in ("epochs", "image_size"):
        return kind, value
    return None


def _fmt(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


# -- families, objective, frozen ------------------------------------------------------------------------------
ENCODERS, DECODERS = (tuple(names) for names in family_names())
_CNN = ("small_cnn", "resnet", "efficientnet_lite0")
# (pattern, families). Specific terms first: a span a term has claimed is not read again by a later, broader one.
_FAMILY_TERMS: list[tuple[re.Pattern[str], tuple[str, ...]]] = [(re.compile(p, re.I), f) for p, f in [
    (r"efficient\s*-?\s*net(?:[\s-]*lite[\s-]*0?|[\s-]*b0)?s?|imagenet[\s-]*pre-?trained|pre-?trained\s+"
     r"(?:\w+\s+)?(?:encoders?|backbones?|cnns?|image\s+models?|feature\s+extractors?)", ("efficientnet_lite0",)),
    (r"\bvision\s+transformers?|\bvits?\b", ("vit",)),
    (r"\bres\s*-?\s*nets?\b|\bresidual\b", ("resnet",)),
    (r"\b(?:small|simple|plain|tiny|basic|shallow|little)\s+(?:conv(?:olutional)?(?:\s+net(?:work)?s?)?|cnns?)\b|"
     r"\bsmall[_\s]cnn\b", ("small_cnn",)),
    (r"\bcnns?\b|\bconv(?:olutional|nets?)\b", _CNN),
    (r"\bgrus?\b|gated\s+recurrent", ("gru",)),
    (r"\blstms?\b|long\s+short[\s-]+term\s+memory", ("lstm",)),
    (r"\brnns?\b|\brecurrent\b", ("lstm", "gru")),
    (r"\btransformers?\b", ("transformer",)),  # unqualified: the decoder (the encoder one is "vision transformer")
]]
_OBJECTIVE_TERMS = [(re.compile(p, re.I), m) for p, m in [
    (r"\bbleu(?:[\s_-]*[1-4])?\b", "bleu_4"), (r"\brouge(?:[\s_-]*l)?\b", "rouge_l"), (r"\bmeteor\b", "meteor"),
    (r"\bcider(?:[\s_-]*d)?\b", "cider")]]
_FROZEN_TERMS = [(re.compile(p, re.I), v) for p, v in [
    (r"\bfrozen\b|\bfreez\w*|\bkeep\s+(?:it|them|the\s+\w+)\s+(?:fixed|frozen)\b|\bfixed\s+(?:encoders?|backbones?)\b",
     True),
    (r"\bfine[\s-]*tun\w*|\bunfrozen\b|\bunfreez\w*|\bend[\s-]+to[\s-]+end\b|"
     r"\btrain(?:ed|ing)?\s+(?:the\s+)?(?:encoders?|backbones?)\b", False)]]
# ("no more than 2M parameters with a GRU" names a bound, not an exclusion)
_NEGATION = re.compile(r"\b(?:(?:not|no)(?!\s+(?:more|less|fewer|longer|later|only)\b)|never|without|except|excluding|"
                       r"avoid\w*|rather\s+than|instead\s+of|other\s+than|anything\s+but|don'?t|do\s+not|doesn'?t|"
                       r"won'?t|nor)\b", re.I)
_FROM_SCRATCH = re.compile(r"\bfrom\s+scratch\b|\bno\s+pre-?train\w*|\bwithout\s+pre-?train\w*", re.I)
_OPTIMIZE = re.compile(r"optimi[sz]e|maximi[sz]e|objective|target|judged?|measured|pick|select|rank|best\s+by|"
                       r"care\s+(?:most\s+)?about|score", re.I)


def _negated(text: str, start: int) -> bool:
    """Whether a negation cue stands before `start` in its clause ("not an LSTM or GRU", "instead of a CNN")."""
    lo = max((m.end() for m in _CLAUSE_END.finditer(text, 0, start)), default=0)
    return bool(_NEGATION.search(text[lo:start]))


def _with_cue(text: str, span: tuple[int, int], negated: bool) -> tuple[int, int]:
    """The evidence of a negated mention starts at its cue: "not an LSTM", "rather than freezing"."""
    if not negated:
        return span
    lo = max((m.end() for m in _CLAUSE_END.finditer(text, 0, span[0])), default=0)
    return list(_NEGATION.finditer(text, lo, span[0]))[-1].start(), span[1]


def _qualified(text: str, match: re.Match[str]) -> tuple[int, int]:
    """The mention with the word "encoder"/"decoder" after it, when there is one ("GRU decoder")."""
    tail = re.match(r"[\s-]*(?:encoders?|decoders?|backbones?)\b", text[match.end():], re.I)
    return match.start(), match.end() + (tail.end() if tail else 0)


def _read_families(text: str, found: Found) -> None:
    claimed: list[tuple[int, int]] = []
    scratch = bool(_FROM_SCRATCH.search(text))
    for pattern, families in _FAMILY_TERMS:
        for match in pattern.finditer(text):
            if any(a < match.end() and match.start() < b for a, b in claimed):
                continue
            claimed.append((match.start(), match.end()))
            negated = _negated(text, match.start())
            span = _with_cue(text, _qualified(text, match), negated)
            names = families if not (scratch and families == _CNN) else tuple(f for f in _CNN if f != "efficientnet_lite0")
            reading = Reading(names, text[span[0]:span[1]], span)
            for kind, known in (("encoder", ENCODERS), ("decoder", DECODERS)):
                if any(f in known for f in names):
                    (found.excluded if negated else found.wanted)[kind].append(
                        Reading(tuple(f for f in names if f in known), reading.evidence, span))
    if scratch and not found.wanted["encoder"]:
        match = _FROM_SCRATCH.search(text)
        assert match is not None
        found.excluded["encoder"].append(Reading(("efficientnet_lite0",), match.group(), match.span()))


def _read_objective(text: str, found: Found) -> None:
    mentions = [(m, metric) for pattern, metric in _OBJECTIVE_TERMS for m in pattern.finditer(text)
                if not _negated(text, m.start())]
    metrics = {metric for _, metric in mentions}
    if len(metrics) > 1:  # several named: the one the person says to optimize, if exactly one has such a word
        mentions = [(m, metric) for m, metric in mentions if _OPTIMIZE.search(_clause(text, m.start(), m.end()))]
        metrics = {metric for _, metric in mentions}
    if len(metrics) == 1:
        match, metric = mentions[0]
        found.values["objective"] = Reading(metric, match.group(), match.span())


def _read_frozen(text: str, found: Found) -> None:
    readings = []
    for pattern, value in _FROZEN_TERMS:
        for match in pattern.finditer(text):
            negated = _negated(text, match.start())
            span = _with_cue(text, match.span(), negated)
            readings.append(Reading(value != negated, text[span[0]:span[1]], span))
    if readings and len({r.value for r in readings}) == 1:  # contradicting words: leave it to the person
        found.values["frozen_encoders"] = readings[0]


def read_requirement(text: str) -> Found:
    """Every value the requirement's words fix, each with its evidence."""
    found = Found()
    _read_quantities(text, found)
    _read_families(text, found)
    _read_objective(text, found)
    _read_frozen(text, found)
    return found


# -- checking an LLM's evidence --------------------------------------------------------------------------------
def _folded(text: str) -> tuple[str, list[int]]:
    """Lowercase, every run of non-alphanumerics as one space; with each folded character's original offset."""
    out, where = [], []
    for i, ch in enumerate(text):
        if ch.isalnum():
            out.append(ch.lower())
            where.append(i)
        elif out and out[-1] != " ":
            out.append(" ")
            where.append(i)
    return "".join(out), where


def find_quote(quote: str, text: str) -> tuple[int, int] | None:
    """Where `quote` stands in `text`, ignoring case, punctuation and spacing; None when it does not."""
    needle, _ = _folded(quote)
    needle = needle.strip()
    if not needle:
        return None
    hay, where = _folded(text)
    at = hay.find(needle)
    if at < 0:
        return None
    return where[at], where[at + len(needle) - 1] + 1
