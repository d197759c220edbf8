"""The built wheel installs in a fresh venv and runs the README's quick start there.

Builds from a copy of the files a wheel is made of (nothing written into the
working tree), with the package index pip is configured for; installs into
a venv without pip by the test's own pip (``pip --python``), which reuses
pip's cache.  About 30 s, most of it installing pydantic's wheels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def _quick_start() -> str:
    text = README.read_text()
    start = text.index("```python") + len("```python")
    return text[start : text.index("```", start)]


def test_the_wheel_installs_in_a_fresh_venv_and_runs_the_quick_start(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "limitry_local",
        source / "limitry_local",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    dist = tmp_path / "dist"
    log = _run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, source, cwd=source)
    # The SPDX license string: no setuptools deprecation warning about the license table.
    assert "Deprecat" not in log, log
    (wheel,) = dist.glob("limitry_local-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = (name for name in names if name.endswith(".dist-info/METADATA"))
        meta = archive.read(metadata).decode()
    assert "License-Expression: MIT" in meta.splitlines()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "limitry_local/py.typed" in names
    assert "limitry_local/lua/bucket_take.lua" in names

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel, cwd=tmp_path)

    # The quick start, twice on one ledger file, in a directory of its own.
    work = tmp_path / "work"
    work.mkdir()
    script = work / "quick_start.py"
    script.write_text(
        _quick_start()
        + "\nimport limitry_local\n"
        + "print(limitry_local.__file__)\n"
        + "print(r.allowed, [l.name for l in tracker.rate_limits.list().data],"
        + " [q.name for q in tracker.quotas.list().data])\n"
        + "tracker.close()\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    runs = [_run(python, "-W", "error", script, cwd=work, env=env).splitlines() for _ in range(2)]
    for location, result in runs:
        assert location.startswith(str(venv)), location  # the installed copy, not the tree
        assert result == "True ['rpm'] ['daily tokens']"
    assert (work / "usage.db").exists()
