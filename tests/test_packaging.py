"""The distribution installs as one `capnas` namespace: build the wheel, install it into a fresh venv,
import every subpackage, and check nothing generic lands at the top of site-packages."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ORGANS = {"capnas": "capnas", "agents": "capnas/agents", "graph": "capnas/graph", "tools": "capnas/tools",
          "contracts": "capnas/contracts", "sandbox": "capnas/sandbox"}
SUBPACKAGES = ["capnas", "capnas.cli", "capnas.commands", "capnas.agents", "capnas.graph", "capnas.tools", "capnas.contracts", "capnas.sandbox"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        cwd=out,
    )
    (whl,) = out.glob("capnas-*.whl")
    return whl


def test_wheel_maps_organs_under_one_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"capnas"}, f"unexpected top-level entries in the wheel: {sorted(tops)}"
    for pkg in SUBPACKAGES:
        assert any(n.startswith(pkg.replace(".", "/")) for n in names), f"{pkg} missing from the wheel"
    # Every package folder in the source tree must be listed in pyproject.toml, or it silently goes missing.
    for folder, namespace in ORGANS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.relative_to(REPO / folder).as_posix()
            assert f"{namespace}/{rel}" in names, f"{folder}/{rel} is not in the wheel: add its package to pyproject.toml"


def test_wheel_installs_and_imports_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # The dependencies (torch alone is gigabytes) come from this test's environment through a .pth file;
    # what is under test is the wheel's own layout, which the fresh venv holds alone.
    fresh_site = Path(
        subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    )
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()] or [sysconfig.get_paths()["purelib"]]
    (fresh_site / "_capnas_test_deps.pth").write_text("\n".join(deps) + "\n")
    code = "import importlib, capnas\n" + "".join(
        f"m = importlib.import_module('{p}'); assert '{fresh_site}' in m.__file__, m.__file__\n" for p in SUBPACKAGES
    )
    subprocess.run([str(py), "-c", code], check=True, cwd=tmp_path)
    version = subprocess.run([str(venv / "bin" / "capnas"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("capnas ")
    for generic in ["agents", "graph", "tools", "contracts", "sandbox"]:
        assert not (fresh_site / generic).exists(), f"generic top-level package '{generic}' installed"
