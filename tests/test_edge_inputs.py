"""Bad input is refused at the edge: every command, run as a person runs it (`python -m capnas ...` in a fresh
working directory), exits 2 with one line on stderr naming the flag (or file) and the value, in under 10 s,
having written nothing (no run dir, no prepared-data cache, no scratch dir, no journal row) and started no
process (no sandbox, no Java, no LLM server).

Processes are watched with an audit hook (`sitecustomize` on PYTHONPATH): every `subprocess.Popen`,
`os.fork`, `os.posix_spawn`, `os.system` and `os.exec*` of the command is written to a log the test reads
(all but the `ldconfig -p` that `import torch` runs to find a library)."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from capnas.tools.task import Budgets, Task, default_image_size, default_min_count

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "fixtures" / "models" / "valid" / "cnn_gru.py"
WALL_LIMIT_S = 10.0
RUN_ID = "run-edge"

SPAWN_HOOK = textwrap.dedent("""
    import os, sys

    _LOG = os.environ.get("CAPNAS_TEST_SPAWN_LOG")
    _WATCHED = ("subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "os.exec")

    def _hook(event, args):
        # `import torch` asks `ldconfig -p` where libdl is (ctypes.util.find_library): a lookup, not a job.
        if event == "subprocess.Popen" and os.path.basename(str(args[0])) == "ldconfig":
            return
        if _LOG and event in _WATCHED:
            with open(_LOG, "a") as log:
                log.write(f"{event} {args!r:.300}\\n")

    sys.addaudithook(_hook)
""")


def bounds(model: type, name: str) -> str:
    """`between 4 and 64`, as the declaration has it (the test restates no bound either)."""
    meta = {type(m).__name__: m for m in model.model_fields[name].metadata}
    return f"between {meta['Ge'].ge} and {meta['Le'].le}"


@dataclass
class Edge:
    """A fresh place to run the CLI: inputs in `inputs/`, the command runs in `work/` with its cache, temp dir
    and home under `tmp_path`; all of them but `inputs/` must stay empty."""

    tmp: Path
    inputs: Path
    work: Path
    watched: list[Path]
    env: dict[str, str]
    spawn_log: Path

    def run(self, *args: str) -> tuple[str, float]:
        """Run `capnas ARGS`, check everything the edge promises, and return (the stderr line, seconds)."""
        started, cpu_before = time.monotonic(), _children_cpu_s()
        proc = subprocess.run([sys.executable, "-m", "capnas", *args], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=120)
        elapsed, cpu = time.monotonic() - started, _children_cpu_s() - cpu_before
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (proc.returncode, proc.stderr)
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
        assert proc.stdout == "", proc.stdout
        assert "Traceback" not in proc.stderr
        assert elapsed < WALL_LIMIT_S, f"{elapsed:.1f} s for a bad input ({cpu:.1f} s of CPU)"
        for folder in self.watched:
            left = sorted(str(p.relative_to(self.tmp)) for p in folder.rglob("*"))
            assert not left, f"{folder.name}/ is not empty after a bad input: {left}"
        spawned = self.spawn_log.read_text() if self.spawn_log.exists() else ""
        assert not spawned, f"a process was started for a bad input:\n{spawned}"
        return lines[0], elapsed


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture
def edge(tmp_path: Path) -> Edge:
    hook, inputs = tmp_path / "hook", tmp_path / "inputs"
    work, cache, temp, home = (tmp_path / name for name in ("work", "cache", "temp", "home"))
    for folder in (hook, inputs, work, cache, temp, home):
        folder.mkdir()
    (hook / "sitecustomize.py").write_text(SPAWN_HOOK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPNAS_", "CUDA_VISIBLE"))}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")])),
               CAPNAS_CACHE=str(cache), TMPDIR=str(temp), HOME=str(home), COLUMNS="200",
               CAPNAS_TEST_SPAWN_LOG=str(tmp_path / "spawned.log"))
    return Edge(tmp_path, inputs, work, [work, cache, temp, home], env, tmp_path / "spawned.log")


def _inputs(edge: Edge) -> dict[str, str]:
    """Files the bad-input cases point at, all in `inputs/`."""
    root = edge.inputs
    (root / "not_json.json").write_text("{'images': [")
    # A well-formed Karpathy json whose image folder is missing.
    (root / "noimages").mkdir()
    entry = {"filename": "a.png", "imgid": 0, "split": "train", "sentences": [{"raw": "a red square", "tokens": []}]}
    (root / "noimages" / "dataset_x.json").write_text(json.dumps({"images": [entry]}))
    # Results for `capnas eval`.
    (root / "results.json").write_text(json.dumps([{"image_id": 8, "caption": "a red square"}]))
    # A folder that looks exported (caption checks the images only past it) and two images.
    model = root / "model"
    model.mkdir()
    for name in ("model.py", "weights.pt", "vocab.json", "MODEL_CARD.md", "predict.py"):
        (model / name).write_text("x\n")
    (model / "config.json").write_text(json.dumps({"format": "capnas-model-v1"}))
    Image.new("RGB", (8, 8)).save(root / "ok.png")
    (root / "notes.png").write_text("this is not an image")
    # A workspace holding a journal with one run and one invalid candidate; and one with a journal that is not.
    from capnas.graph.journal import Journal

    journal = Journal(root / "ws" / "journal.sqlite")
    journal.create_run({"dataset": "shapes:20"}, {}, run_id=RUN_ID)
    cand = journal.add_candidate(RUN_ID, "x = 1\n", round=1, mode="random", candidate_id="c-bad")
    journal.update_candidate(cand.candidate_id, status="invalid")
    (root / "junk").mkdir()
    (root / "junk" / "journal.sqlite").write_text("not a database")
    (root / "a_folder").mkdir()
    return {"in": str(root), "model": str(MODEL), "ws": str(root / "ws"), "export": str(model)}


# (case id, argv with {in}/{model}/{ws}/{export} placeholders, fragments the one line must hold)
CASES = [
    # capnas train
    ("train-max-len", ["train", "{model}", "--dataset", "shapes:20", "--max-len", "200"],
     ["capnas train: --max-len 200: must be " + bounds(Task, "max_len")]),
    ("train-epochs-0", ["train", "{model}", "--dataset", "shapes:20", "--epochs", "0"],
     ["capnas train: --epochs 0: must be " + bounds(Budgets, "epochs")]),
    ("train-epochs-text", ["train", "{model}", "--dataset", "shapes:20", "--epochs", "many"],
     ["capnas train:", "--epochs many", "integer"]),
    ("train-image-size", ["train", "{model}", "--dataset", "shapes:20", "--image-size", "3"],
     ["--image-size 3: must be " + bounds(Task, "image_size")]),
    ("train-min-count", ["train", "{model}", "--dataset", "shapes:20", "--min-count", "0"],
     ["--min-count 0: must be " + bounds(Task, "min_count")]),
    ("train-time", ["train", "{model}", "--dataset", "shapes:20", "--train-time-s", "0"],
     ["--train-time-s 0: must be greater than 0"]),
    ("train-batch-size", ["train", "{model}", "--dataset", "shapes:20", "--batch-size", "0"], ["--batch-size 0"]),
    ("train-device", ["train", "{model}", "--dataset", "shapes:20", "--device", "gpu7"],
     ["--device gpu7: must be cpu, cuda or cuda:N"]),
    ("train-no-model", ["train", "{in}/nope.py", "--dataset", "shapes:20"], ["nope.py: no such file"]),
    ("train-no-dataset-flag", ["train", "{model}"], ["--dataset"]),
    ("train-missing-json", ["train", "{model}", "--dataset", "{in}/missing.json"],
     ["--dataset {in}/missing.json", "no such file"]),
    ("train-not-json", ["train", "{model}", "--dataset", "{in}/not_json.json"],
     ["--dataset {in}/not_json.json", "not valid JSON"]),
    ("train-no-images-dir", ["train", "{model}", "--dataset", "{in}/noimages/dataset_x.json"],
     ["image folder {in}/noimages/images", "--images"]),
    ("train-images-flag", ["train", "{model}", "--dataset", "{in}/noimages/dataset_x.json", "--images", "{in}/nowhere"],
     ["--images {in}/nowhere: no such folder"]),
    ("train-hp", ["train", "{model}", "--dataset", "shapes:20", "--hp", "momentum=0.9"], ["--hp 'momentum=0.9'"]),
    ("train-run-dir-file", ["train", "{model}", "--dataset", "shapes:20", "--run-dir", "{in}/not_json.json"],
     ["--run-dir {in}/not_json.json: not a folder"]),
    # capnas validate
    ("validate-image-size", ["validate", "{model}", "--dataset", "shapes:20", "--image-size", "3"],
     ["capnas validate: --image-size 3: must be " + bounds(Task, "image_size")]),
    ("validate-max-params", ["validate", "{model}", "--dataset", "shapes:20", "--max-params", "10"],
     ["--max-params 10: must be " + bounds(Task, "max_params")]),
    ("validate-latency", ["validate", "{model}", "--dataset", "shapes:20", "--max-latency-ms", "0"],
     ["--max-latency-ms 0: must be greater than 0"]),
    ("validate-max-len", ["validate", "{model}", "--dataset", "shapes:20", "--max-len", "2"],
     ["--max-len 2: must be " + bounds(Task, "max_len")]),
    ("validate-device", ["validate", "{model}", "--dataset", "shapes:20", "--device", "gpu7"], ["--device gpu7"]),
    ("validate-no-model", ["validate", "{in}/nope.py", "--dataset", "shapes:20"], ["nope.py: no such file"]),
    ("validate-shapes-n", ["validate", "{model}", "--dataset", "shapes:3"], ["--dataset shapes:3", "N >= "]),
    ("validate-not-json", ["validate", "{model}", "--dataset", "{in}/not_json.json"], ["not valid JSON"]),
    ("validate-contract", ["validate", "{model}", "--dataset", "shapes:20", "--contract", "caption-net-v7"],
     ["--contract caption-net-v7"]),
    ("validate-unknown-option", ["validate", "{model}", "--dataset", "shapes:20", "--max-lenn", "4"],
     ["No such option: --max-lenn"]),
    # capnas eval
    ("eval-no-results", ["eval", "{in}/missing.json", "--dataset", "shapes:20", "--split", "val"],
     ["capnas eval: {in}/missing.json: no such file"]),
    ("eval-results-not-json", ["eval", "{in}/not_json.json", "--dataset", "shapes:20", "--split", "val"],
     ["{in}/not_json.json: not valid JSON"]),
    ("eval-split", ["eval", "{in}/results.json", "--dataset", "shapes:20", "--split", "train"], ["--split train"]),
    ("eval-dataset", ["eval", "{in}/results.json", "--dataset", "{in}/missing.json", "--split", "val"],
     ["--dataset {in}/missing.json"]),
    ("eval-images", ["eval", "{in}/results.json", "--dataset", "{in}/noimages/dataset_x.json", "--split", "val",
                     "--images", "{in}/nowhere"], ["--images {in}/nowhere"]),
    ("eval-missing-captions", ["eval", "{in}/results.json", "--dataset", "shapes:20", "--split", "val"],
     ["have no caption"]),
    # capnas caption
    ("caption-no-folder", ["caption", "{in}/nowhere", "{in}/ok.png"], ["capnas caption: {in}/nowhere is not a folder"]),
    ("caption-not-exported", ["caption", "{in}", "{in}/ok.png"], ["is not an exported capnas model"]),
    ("caption-no-image", ["caption", "{export}", "{in}/missing.png"], ["image file not found: {in}/missing.png"]),
    ("caption-not-an-image", ["caption", "{export}", "{in}/ok.png", "{in}/notes.png"],
     ["cannot read image {in}/notes.png"]),
    ("caption-device", ["caption", "{export}", "{in}/ok.png", "--device", "gpu7"], ["--device gpu7"]),
    ("caption-timeout", ["caption", "{export}", "{in}/ok.png", "--timeout", "0"], ["--timeout 0"]),
    # capnas export
    ("export-no-journal", ["export", "r1", "--workspace", "{in}/a_folder"],
     ["capnas export: no run journal at {in}/a_folder/journal.sqlite"]),
    ("export-unknown-run", ["export", "nope", "--workspace", "{ws}"], ["no run 'nope'", RUN_ID]),
    ("export-unknown-candidate", ["export", RUN_ID, "--workspace", "{ws}", "--candidate", "zzz"],
     ["--candidate zzz: no candidate 'zzz'"]),
    ("export-untrained-candidate", ["export", RUN_ID, "--workspace", "{ws}", "--candidate", "c-bad"],
     ["--candidate c-bad", "invalid, not trained"]),
    ("export-junk-journal", ["export", RUN_ID, "--workspace", "{in}/junk"], ["is not a capnas run journal"]),
    ("export-out-file", ["export", RUN_ID, "--workspace", "{ws}", "--out", "{in}/ok.png"],
     ["--out {in}/ok.png: exists and is not a folder"]),
    # capnas report
    ("report-no-journal", ["report", "r1", "--workspace", "{in}/a_folder"], ["capnas report: no run journal at"]),
    ("report-unknown-run", ["report", "nope", "--workspace", "{ws}"], ["no run 'nope'"]),
    ("report-out-folder", ["report", RUN_ID, "--workspace", "{ws}", "--out", "{in}/a_folder"],
     ["--out {in}/a_folder: is a folder"]),
    # capnas sandbox exec
    ("sandbox-no-script", ["sandbox", "exec", "{in}/nope.py"], ["capnas sandbox exec:", "nope.py"]),
    ("sandbox-time-limit", ["sandbox", "exec", "{model}", "--time-limit", "0"], ["--time-limit 0"]),
    ("sandbox-memory", ["sandbox", "exec", "{model}", "--memory-mb", "1"], ["--memory-mb 1"]),
    ("sandbox-device", ["sandbox", "exec", "{model}", "--device", "gpu7"], ["--device gpu7"]),
]


@pytest.mark.parametrize(("argv", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_value_exits_2_with_one_line_naming_it(edge: Edge, argv: list[str], fragments: list[str]) -> None:
    where = _inputs(edge)
    ws_runs = _journal_rows(Path(where["ws"]))
    line, _ = edge.run(*(a.format(**where) for a in argv))
    for fragment in fragments:
        assert fragment.format(**where) in line, line
    assert _journal_rows(Path(where["ws"])) == ws_runs  # no run, no candidate was added


def _journal_rows(workspace: Path) -> tuple[list, list]:
    with sqlite3.connect(workspace / "journal.sqlite") as db:
        return (db.execute("SELECT run_id, status FROM runs").fetchall(),
                db.execute("SELECT candidate_id, status FROM candidates").fetchall())


def test_the_one_line_for_a_bad_value_comes_from_the_declaration() -> None:
    """The commands' bounds are Task's and Budgets' fields: the same line for every command and every bound."""
    from capnas.commands._checks import bounds_problem

    assert bounds_problem(Task, "max_len", 200) == "must be " + bounds(Task, "max_len")
    assert bounds_problem(Task, "max_len", Task.model_fields["max_len"].default) is None
    assert bounds_problem(Task, "image_size", None) is None  # not given: by dataset
    assert bounds_problem(Task, "max_latency_ms", 0.0) == "must be greater than 0"
    assert bounds_problem(Budgets, "time_budget", 1e9) == "must be greater than 0 and at most 43200"


def test_train_and_validate_default_to_what_capnas_run_uses() -> None:
    """No --image-size / --min-count: the sizes `capnas run` picks for that dataset (Task's defaults)."""
    from typer.main import get_command

    from capnas.cli import app

    commands = get_command(app).commands  # type: ignore[attr-defined]
    for name in ("train", "validate"):
        params = {p.name: p for p in commands[name].params}
        assert params["image_size"].default == Task.model_fields["image_size"].default
        assert params["min_count"].default == Task.model_fields["min_count"].default
        assert params["max_len"].default == Task.model_fields["max_len"].default
    for dataset in ("shapes:20", "data/dataset_flickr8k.json"):  # what the commands fill in for None
        task = Task(dataset=dataset)
        assert (task.image_size, task.min_count) == (default_image_size(dataset), default_min_count(dataset))


def test_a_model_that_reads_device_type_validates_through_the_sandbox(tmp_path: Path) -> None:
    """The probe hands Net a torch.device, as training does: `device.type` in __init__ is valid everywhere."""
    text = MODEL.read_text()
    model = tmp_path / "device_type.py"
    model.write_text(text.replace("        super().__init__()\n",
                                  "        super().__init__()\n        self.on_gpu = device.type == 'cuda'\n", 1))
    assert "device.type" in model.read_text()
    env = {**os.environ, "CAPNAS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "capnas", "validate", str(model), "--dataset", "shapes:20",
                           "--image-size", "32", "--max-len", "12", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode == 2 and "the probe could not run" in proc.stderr:
        pytest.skip(f"no sandbox here: {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"], (proc.stderr, doc)
