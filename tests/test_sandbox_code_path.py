"""The sandbox runs the code the driver imports, wherever each package comes from. `langgraph dev` in a clone puts
the clone on sys.path, so `capnas` comes from the clone while the organs (`capnas.sandbox`, `capnas.contracts`)
come through the editable install's finder, which may point at another folder. A real sandboxed job, real tier."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import capnas

pytestmark = pytest.mark.timeout(180)

DRIVER = """\
import json, sys
sys.path.append({clone!r})  # what `langgraph dev` does with the folder it serves (after site-packages)
import capnas, capnas.contracts, capnas.sandbox
from capnas.sandbox import Job, Limits, run_sandboxed

limits = Limits(wall_s=60, memory_mb=1024, pids=64, file_size_mb=64, tmp_mb=32, scratch_mb=256)
result = run_sandboxed(Job(entry="script", scratch={scratch!r}, script={script!r}, limits=limits))
where = {{name: sys.modules[name].__file__ for name in ("capnas", "capnas.contracts", "capnas.sandbox")}}
print(json.dumps({{"driver": where, "reason": result.exit_reason, "tier": result.tier,
                  "stdout": result.stdout_tail, "stderr": result.stderr_tail}}))
"""

INSIDE = """\
import json, sys
import capnas.sandbox.harness, capnas.contracts
print(json.dumps({name: sys.modules[name].__file__ for name in ("capnas", "capnas.contracts", "capnas.sandbox")}))
"""


def test_the_harness_imports_each_package_from_where_the_driver_did(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(Path(capnas.__file__).parent, clone / "capnas", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "inside.py").write_text(INSIDE)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(clone=str(clone), scratch=str(tmp_path / "scratch"),
                                    script=str(tmp_path / "inside.py")))
    done = subprocess.run([sys.executable, str(driver)], cwd=clone, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if not report["driver"]["capnas"].startswith(str(clone)):
        pytest.skip("capnas is not an editable install here: the clone's copy is not what the driver imports")
    assert report["reason"] == "ok", (report["tier"], report["stderr"])
    inside = json.loads(report["stdout"].strip().splitlines()[-1])
    assert inside == report["driver"], f"tier {report['tier']}: the harness imported other code than the driver"
