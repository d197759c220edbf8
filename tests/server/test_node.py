"""The JavaScript ``fetch`` example of docs/server.md, run by Node.js against a real server.

Proves the non-Python path works as the docs write it: the example is read
from the docs, not copied, so the docs cannot drift from what runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.server.conftest import running

GUIDE = Path(__file__).parents[2] / "docs" / "server.md"
NODE = shutil.which("node")


def _block(language: str, after: str = "") -> str:
    text = GUIDE.read_text()
    text = text[text.index(after) :] if after else text
    found = re.search(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
    assert found is not None, f"docs/server.md should hold a {language or 'plain'} block"
    return found.group(1)


def test_the_docs_fetch_example_runs_in_node_as_documented(tmp_path: Path) -> None:
    assert NODE is not None, "node is not installed: apt-get install -y nodejs (.ci/run does)"
    script = tmp_path / "track.mjs"
    script.write_text(_block("js"))
    with running(tmp_path / "node.db", api_key="sk_node") as server:
        done = subprocess.run(
            [NODE, str(script)],
            env={"LIMITRY_URL": server.url, "LIMITRY_LOCAL_API_KEY": "sk_node", "PATH": ""},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    # The documented output, but for the seconds to the end of the day.
    expected = _block("", after="It prints:").strip().splitlines()
    printed = done.stdout.strip().splitlines()
    assert len(printed) == len(expected), done.stdout
    for line, documented in zip(printed, expected, strict=True):
        pattern = re.escape(documented).replace(r"14968", r"\d+")
        assert re.fullmatch(pattern, line), (line, documented)
