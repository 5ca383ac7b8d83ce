"""The README's visit example runs as written against a real server (no auth), from the
repository root: the documented flow and the code cannot drift apart."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import ROOT, ServerProcess


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- visit-example:start -->\n```python\n(.*?)```\n<!-- visit-example:end -->", text, re.S)
    assert block, "the README's visit example is missing"
    return block.group(1)


def test_the_readme_visit_example_runs_to_a_finished_encounter(tmp_path):
    proc = ServerProcess(tmp_path / "fhir.db").start()
    try:
        code = readme_example().replace('B = "http://127.0.0.1:8080"', f'B = "{proc.base}"')
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "finished"
    finally:
        proc.stop()
