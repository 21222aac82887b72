"""The COCO caption metrics: one long-lived evaluator over pycocoevalcap.

`CaptionEvaluator` scores `{image_id: candidate}` against `{image_id: [references]}` with pycocoevalcap's own
PTBTokenizer, BLEU-1..4, METEOR, ROUGE-L and CIDEr (and SPICE only where its jars are already on disk), on
pycocoevalcap's scale (0.18 = 18 BLEU points). It starts ONE METEOR process (~18 s of JVM and paraphrase-table
start-up) and reuses it for every `score()` call, so keep one evaluator for the life of a search.

Guards against pycocoevalcap's traps, each tested in tests/test_metrics.py:
- Captions are whitespace-normalised first: a newline (or \\r, \\f, \\u2028...) inside a caption makes the Java
  tokenizer emit an extra line, which silently shifts every later caption onto the wrong image.
- Tokenization writes its temporary file in the system temp dir, not in site-packages (the library's default).
- METEOR's stderr pipe is drained (unread, it can fill and block the JVM); every METEOR call runs under a
  watchdog; a failed call discards the process (the library leaves its lock held and the stream out of step)
  and the next call starts a fresh one; `__del__` never waits on that lock.
- SPICE never downloads anything and never breaks an evaluation: it is reported as unavailable instead.

The second half reads a `CAPTIONS.json` results file (the COCO results format) and pairs it with a dataset split.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _meteor_module
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb_module

ImageId = int | str

METRIC_KEYS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
JAVA_HINT = "install a Java runtime (e.g. `apt-get install default-jre-headless`) and make sure `java` is on PATH"
SPICE_CORENLP = "stanford-corenlp-3.6.0"
_SHOW = 5  # how many offending ids an error message lists


class MetricsError(RuntimeError):
    """The metrics could not be computed here (Java missing, a scorer process failed)."""


class CaptionInputError(MetricsError, ValueError):
    """The captions handed in are malformed (unknown or missing ids, non-string captions, a bad results file)."""


@dataclass(frozen=True)
class EvalResult:
    scores: dict[str, float]  # METRIC_KEYS order, plus "spice" only when it was computed
    per_image: dict[ImageId, dict[str, float]]  # bleu_4, meteor, rouge_l, cider (and spice) for each image
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why it was not computed
    n_images: int = 0


def _preview(ids: Sequence[Any]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOW])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _SHOW else "")


# --------------------------------------------------------------------------------------------------------------
# Java, tokenization, SPICE availability
# --------------------------------------------------------------------------------------------------------------


def check_java() -> str:
    """Path of a working `java`, or MetricsError saying what is missing and how to install it."""
    java = shutil.which("java")
    if java is None:
        raise MetricsError(
            f"`java` was not found on PATH; the caption metrics (PTBTokenizer, METEOR) run on Java: {JAVA_HINT}")
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MetricsError(f"`{java} -version` failed ({exc}); {JAVA_HINT}") from exc
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip()
        raise MetricsError(f"`{java} -version` exited {proc.returncode}: {said}; {JAVA_HINT}")
    return java


def normalize_caption(text: str) -> str:
    """Collapse every run of whitespace (newlines, \\r, \\f, \\u2028, ...) to one space, so one caption is one line."""
    return " ".join(text.split())


def ptb_tokenize(texts: Sequence[str], *, timeout_s: float = 600.0) -> list[str]:
    """pycocoevalcap's PTBTokenizer (same jar, flags and punctuation filter), one output per input, in order.

    The library's `PTBTokenizer.tokenize` writes its input file into site-packages and zips output lines to
    images without checking the count; this runs the same command on a file in the system temp dir and fails
    loudly if the line count does not match."""
    jar = Path(_ptb_module.__file__).with_name(_ptb_module.STANFORD_CORENLP_3_4_1_JAR)
    lines = [normalize_caption(t) for t in texts]
    with tempfile.TemporaryDirectory(prefix="capnas-ptb-") as tmp:
        src = Path(tmp) / "captions.txt"
        src.write_text("\n".join(lines), encoding="utf-8")
        cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
               str(src)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise MetricsError(f"`java` was not found on PATH; {JAVA_HINT}") from exc
        except subprocess.TimeoutExpired as exc:
            raise MetricsError(f"PTBTokenizer did not finish within {timeout_s:g} s on {len(lines)} captions") from exc
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace")[-2000:]
        raise MetricsError(f"PTBTokenizer ({jar}) exited {proc.returncode}: {said}")
    out = proc.stdout.decode("utf-8", errors="replace").split("\n")
    if len(out) < len(lines) or any(rest.strip() for rest in out[len(lines):]):
        raise MetricsError(f"PTBTokenizer returned {len(out)} lines for {len(lines)} captions; "
                           "the outputs cannot be matched to images")
    punct = _ptb_module.PUNCTUATIONS
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in out[: len(lines)]]


def spice_unavailable_reason(spice_dir: Path | None = None) -> str | None:
    """None when SPICE's Stanford CoreNLP jars are on disk; otherwise why SPICE cannot run (never downloads)."""
    if spice_dir is None:
        try:
            from pycocoevalcap.spice import spice as spice_module
        except Exception as exc:  # an optional metric: any import problem just makes it unavailable
            return f"pycocoevalcap.spice does not import ({exc})"
        spice_dir = Path(spice_module.__file__).parent
    needed = [spice_dir / "spice-1.0.jar", spice_dir / "lib" / f"{SPICE_CORENLP}.jar",
              spice_dir / "lib" / f"{SPICE_CORENLP}-models.jar"]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        names = ", ".join(str(p.relative_to(spice_dir)) for p in missing)
        return (f"{names} missing from {spice_dir} (pycocoevalcap would download them at first use; capnas never "
                f"downloads): put {SPICE_CORENLP}.jar and {SPICE_CORENLP}-models.jar in its lib/ to enable SPICE")
    return None


_REDIRECT_LOCK = threading.Lock()
_redirect_depth = 0
_saved_stdout_fd: int | None = None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr for the block, so child processes cannot corrupt `--json` output.
    Counted, because candidates scored on several threads at once overlap their blocks: fd 1 goes back to
    stdout when the last block ends, not when the first does."""
    global _redirect_depth, _saved_stdout_fd
    with _REDIRECT_LOCK:
        if _redirect_depth == 0:
            sys.stdout.flush()
            _saved_stdout_fd = os.dup(1)
            os.dup2(2, 1)
        _redirect_depth += 1
    try:
        yield
    finally:
        with _REDIRECT_LOCK:
            _redirect_depth -= 1
            if _redirect_depth == 0 and _saved_stdout_fd is not None:
                sys.stdout.flush()
                os.dup2(_saved_stdout_fd, 1)
                os.close(_saved_stdout_fd)
                _saved_stdout_fd = None


# --------------------------------------------------------------------------------------------------------------
# METEOR
# --------------------------------------------------------------------------------------------------------------


class _Meteor(Meteor):
    """pycocoevalcap's Meteor (same command, same protocol code) with its stderr drained and a safe shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._drain_stderr, name="meteor-stderr", daemon=True).start()

    def _drain_stderr(self) -> None:
        for line in self.meteor_p.stderr:
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    def close(self) -> None:
        proc = getattr(self, "meteor_p", None)
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            proc.stdout.close()

    def __del__(self) -> None:
        # The library's __del__ acquires self.lock, which a failed compute_score leaves held: it would block forever.
        with contextlib.suppress(Exception):
            self.close()


# --------------------------------------------------------------------------------------------------------------
# The evaluator
# --------------------------------------------------------------------------------------------------------------


def check_inputs(refs: Mapping[ImageId, Sequence[str]], cands: Mapping[ImageId, str], *,
                 require_all: bool = True) -> None:
    """CaptionInputError naming the offending ids unless every candidate has references (and, with
    `require_all`, every referenced image has a candidate) and all captions are strings."""
    if not cands:
        raise CaptionInputError("no candidate captions to score")

    def good_refs(v: object) -> bool:
        return isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0 and all(isinstance(s, str) for s in v)

    bad_refs = [k for k, v in refs.items() if not good_refs(v)]
    if bad_refs:
        raise CaptionInputError("references must be a non-empty list of strings per image; "
                                f"not so for image id(s) {_preview(bad_refs)}")
    bad_cands = [k for k, v in cands.items() if not isinstance(v, str)]
    if bad_cands:
        raise CaptionInputError(f"each candidate must be one string; not so for image id(s) {_preview(bad_cands)}")
    unknown = [k for k in cands if k not in refs]
    if unknown:
        raise CaptionInputError(f"{len(unknown)} candidate image id(s) have no references: {_preview(unknown)}")
    if require_all:
        missing = [k for k in refs if k not in cands]
        if missing:
            raise CaptionInputError(f"{len(missing)} of {len(refs)} referenced image(s) have no candidate: "
                                    f"{_preview(missing)}; a full evaluation needs one candidate per image")


class CaptionEvaluator:
    """Scores captions with pycocoevalcap; holds one METEOR process. Use as a context manager or call close().

    Thread-safe: concurrent `score()` calls share the METEOR process one call at a time."""

    def __init__(self, *, spice: bool = True, meteor_timeout_s: float | None = None) -> None:
        """`meteor_timeout_s` (also settable later as an attribute): how long one METEOR call may take before its
        process is killed; None means 180 s plus 50 ms per image, which covers the JVM start-up on a busy machine."""
        check_java()
        for jar in (Path(_ptb_module.__file__).with_name(_ptb_module.STANFORD_CORENLP_3_4_1_JAR),
                    Path(_meteor_module.__file__).with_name(_meteor_module.METEOR_JAR)):
            if not jar.is_file():
                raise MetricsError(f"{jar} is missing: the pycocoevalcap install is incomplete; reinstall it "
                                   "(`pip install --force-reinstall pycocoevalcap==1.2`)")
        self.meteor_timeout_s = meteor_timeout_s
        self._spice_reason = spice_unavailable_reason() if spice else "not requested"
        self._lock = threading.Lock()
        self._meteor: _Meteor | None = _Meteor()  # starts the JVM now, so it warms up while we tokenize

    def __enter__(self) -> CaptionEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        meteor, self._meteor = self._meteor, None
        if meteor is not None:
            meteor.close()

    def __del__(self) -> None:
        try:  # no contextlib here: at interpreter shutdown module globals may already be None
            self.close()
        except Exception:  # noqa: BLE001 - a destructor must not raise
            pass

    def score(self, refs: Mapping[ImageId, Sequence[str]], cands: Mapping[ImageId, str], *,
              require_all: bool = True) -> EvalResult:
        """Corpus scores and per-image scores for `cands` against `refs` (see module doc).
        With `require_all=False`, scores only the images that have a candidate."""
        check_inputs(refs, cands, require_all=require_all)
        ids = [k for k in refs if k in cands]  # refs order: deterministic whatever order cands came in
        flat = [c for k in ids for c in refs[k]] + [cands[k] for k in ids]
        tokens = ptb_tokenize(flat)
        gts: dict[ImageId, list[str]] = {}
        pos = 0
        for k in ids:
            gts[k] = tokens[pos: pos + len(refs[k])]
            pos += len(refs[k])
        res = {k: [tokens[pos + i]] for i, k in enumerate(ids)}

        # METEOR works in its JVM while the pure-Python scorers run here.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteor") as pool:
            meteor_job = pool.submit(self._run_meteor, gts, res)
            bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
            rouge, rouge_each = Rouge().compute_score(gts, res)
            cider, cider_each = Cider().compute_score(gts, res)
            meteor, meteor_each = meteor_job.result()

        scores = {f"bleu_{n + 1}": float(bleu[n]) for n in range(4)}
        scores |= {"meteor": float(meteor), "rouge_l": float(rouge), "cider": float(cider)}
        per_image = {k: {"bleu_4": float(bleu_each[3][i]), "meteor": float(meteor_each[i]),
                         "rouge_l": float(rouge_each[i]), "cider": float(cider_each[i])} for i, k in enumerate(ids)}
        unavailable: dict[str, str] = {}
        if self._spice_reason is None:
            try:
                spice, spice_each = self._run_spice(gts, res)
                scores["spice"] = spice
                for i, k in enumerate(ids):
                    per_image[k]["spice"] = spice_each[i]
            except Exception as exc:  # optional metric: report, never fail the evaluation
                unavailable["spice"] = f"SPICE failed: {type(exc).__name__}: {exc}"
        else:
            unavailable["spice"] = self._spice_reason
        return EvalResult(scores=scores, per_image=per_image, unavailable=unavailable, n_images=len(ids))

    def _run_meteor(self, gts: dict[ImageId, list[str]], res: dict[ImageId, list[str]]) -> tuple[float, list[float]]:
        # '|||' separates fields in METEOR's line protocol; the library strips it from the candidate only.
        def clean(s: str) -> str:
            return " ".join(s.replace("|||", " ").split())

        gts = {k: [clean(s) for s in v] for k, v in gts.items()}
        res = {k: [clean(v[0])] for k, v in res.items()}
        with self._lock:  # one METEOR call at a time per evaluator
            return self._run_meteor_locked(gts, res)

    def _run_meteor_locked(self, gts: dict[ImageId, list[str]],
                           res: dict[ImageId, list[str]]) -> tuple[float, list[float]]:
        meteor = self._meteor if self._meteor is not None else _Meteor()
        self._meteor = None  # re-attached only after a clean call
        timeout = self.meteor_timeout_s if self.meteor_timeout_s is not None else 180.0 + 0.05 * len(gts)
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            meteor.meteor_p.kill()

        watchdog = threading.Timer(timeout, kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            score, each = meteor.compute_score(gts, res)
        except Exception as exc:
            meteor.close()
            tail = " | ".join(meteor.stderr_tail) or "nothing"
            if expired.is_set():
                raise MetricsError(f"METEOR did not answer within {timeout:g} s on {len(gts)} images; its process was "
                                   f"stopped and the next call starts a new one (its stderr: {tail})") from exc
            raise MetricsError(f"METEOR failed ({type(exc).__name__}: {exc}); the next call starts a new process "
                               f"(its stderr: {tail})") from exc
        finally:
            watchdog.cancel()
        self._meteor = meteor
        return float(score), [float(s) for s in each]

    @staticmethod
    def _run_spice(gts: dict[ImageId, list[str]], res: dict[ImageId, list[str]]) -> tuple[float, list[float]]:
        from pycocoevalcap.spice.spice import Spice

        with _stdout_to_stderr():  # the SPICE jar inherits stdout
            score, each = Spice().compute_score(gts, res)
        return float(score), [float(s["All"]["f"]) for s in each]


# --------------------------------------------------------------------------------------------------------------
# CAPTIONS.json (COCO results format) against a dataset split
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultEntry:
    index: int  # position in the results list, for error messages
    image_id: ImageId  # as written: the dataset's image id, or the image's file name
    caption: str


class SplitItem(Protocol):
    image_id: ImageId
    filename: str
    captions: list[str]


def read_results(path: Path) -> list[ResultEntry]:
    """Parse a COCO results file: a JSON list of {"image_id": int | str, "caption": str}, one entry per image."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CaptionInputError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptionInputError(f"{path}: cannot be read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise CaptionInputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise CaptionInputError(f"{path}: expected a JSON list of {{\"image_id\": ..., \"caption\": ...}} objects "
                                f"(the COCO results format), got a JSON {type(data).__name__}")
    if not data:
        raise CaptionInputError(f"{path}: the results list is empty")
    entries: list[ResultEntry] = []
    first_seen: dict[ImageId, int] = {}
    for i, entry in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict):
            raise CaptionInputError(
                f"{where}: expected an object with \"image_id\" and \"caption\", got {json.dumps(entry)[:80]}")
        missing = [k for k in ("image_id", "caption") if k not in entry]
        if missing:
            raise CaptionInputError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
        image_id, caption = entry["image_id"], entry["caption"]
        if isinstance(image_id, bool) or not isinstance(image_id, int | str):
            raise CaptionInputError(f"{where}: \"image_id\" must be the dataset's image id (an integer) "
                                    f"or the image's file name, got {image_id!r}")
        if not isinstance(caption, str):
            raise CaptionInputError(f"{where}: \"caption\" must be a string, got {caption!r}")
        if image_id in first_seen:
            raise CaptionInputError(f"{where}: duplicate image_id {image_id!r} "
                                    f"(first at entry {first_seen[image_id]}); give one caption per image")
        first_seen[image_id] = i
        entries.append(ResultEntry(i, image_id, caption))
    return entries


def pair_with_split(entries: Sequence[ResultEntry], items: Sequence[SplitItem], *, source: str | Path,
                    split: str, require_all: bool = True) -> tuple[dict[ImageId, list[str]], dict[ImageId, str]]:
    """(refs, cands) keyed by the dataset's image id. A result may name its image by id or by file name;
    ids not in the split, two entries for one image, and (with `require_all`) images without a caption are errors."""
    by_id = {item.image_id: item for item in items}
    by_name = {item.filename: item for item in items}
    # A file name may also come without the dataset's folder: "COCO_val2014_1.jpg" for "val2014/COCO_val2014_1.jpg".
    base_counts = collections.Counter(Path(item.filename).name for item in items)
    for item in items:
        if base_counts[Path(item.filename).name] == 1:
            by_name.setdefault(Path(item.filename).name, item)
    cands: dict[ImageId, str] = {}
    entry_of: dict[ImageId, int] = {}
    unknown: list[ResultEntry] = []
    for e in entries:
        item = by_id.get(e.image_id) if isinstance(e.image_id, int) else by_id.get(e.image_id, by_name.get(e.image_id))
        if item is None:
            unknown.append(e)
            continue
        if item.image_id in cands:
            raise CaptionInputError(f"{source}: entry {e.index} ({e.image_id!r}) and entry {entry_of[item.image_id]} "
                                    f"name the same image ({item.filename}, id {item.image_id!r}); "
                                    "give one caption per image")
        cands[item.image_id] = e.caption
        entry_of[item.image_id] = e.index
    if unknown:
        listed = ", ".join(f"{e.image_id!r} (entry {e.index})" for e in unknown[:_SHOW])
        more = f", ... ({len(unknown)} in all)" if len(unknown) > _SHOW else ""
        raise CaptionInputError(f"{source}: {len(unknown)} image_id(s) are not in split {split!r}: {listed}{more}; "
                                "image_id is the dataset's image id or the image's file name")
    refs = {item.image_id: list(item.captions) for item in items}
    if require_all:
        missing = [item.filename for item in items if item.image_id not in cands]
        if missing:
            raise CaptionInputError(f"{source}: {len(missing)} of {len(items)} images of split {split!r} have no "
                                    f"caption: {_preview(missing)}; a split evaluation needs one caption per image")
    return refs, cands
