"""The integrations depend on no SDK or framework: importing them imports none."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import limitry_local
assert "limitry_local.integrations" not in sys.modules, "imported by default"
import limitry_local.integrations.anthropic
import limitry_local.integrations.asgi
import limitry_local.integrations.openai
loaded = sorted({"openai", "anthropic", "starlette", "httpx", "fastapi"} & sys.modules.keys())
print(loaded)
"""


def test_importing_the_integrations_imports_no_sdk() -> None:
    # A fresh interpreter: this test session has the SDKs imported already.
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
