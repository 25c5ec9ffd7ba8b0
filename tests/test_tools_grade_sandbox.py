"""The grader without bubblewrap: it refuses to run unless the instructor passes
``--no-sandbox``, and then every report says the grades were produced without isolation.
The sandboxed side of the same witnesses is in tests/test_tools_grade.py (the spy, the vandal
and the delegator of its batch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_tools_grade import CHAPTER, SPY, SPY_SETUP, _Listener, nbs



def _spy_class(root: Path, port: int) -> Path:
    secrets = {"other": str(root / "subs" / "good" / f"{CHAPTER}.ipynb"), "config": str(root / "grading.json"),
               "port": port}
    (root / "grading.json").write_text(json.dumps({"hidden_seeds": [1001]}))
    nbs.write(nbs.tiny({name: source.format(**secrets) for name, source in SPY.items()},
                       extra={0: SPY_SETUP.format(**secrets)}), root / "subs" / "spy" / f"{CHAPTER}.ipynb")
    nbs.write(nbs.tiny(nbs.STUB), root / "subs" / "good" / f"{CHAPTER}.ipynb")  # only there to be seen
    return root / "subs"


def test_without_bubblewrap_the_grader_refuses_unless_told_and_then_says_so(tmp_path):
    listener = _Listener()
    subs = _spy_class(tmp_path, listener.port)
    out = tmp_path / "grades.csv"
    base = [sys.executable, "-m", "course_tools.grade", str(subs), "--out", str(out), "--quiet", "--jobs", "2",
            "--config", str(tmp_path / "grading.json")]
    try:
        refused = subprocess.run(base, capture_output=True, text=True, timeout=120,
                                 env=dict(os.environ, SUPERPOSITION_BWRAP=str(tmp_path / "no-bwrap")))
        assert refused.returncode == 2 and not out.exists()
        assert "bubblewrap" in refused.stderr and "--no-sandbox" in refused.stderr
        run = subprocess.run([*base, "--no-sandbox"], capture_output=True, text=True, timeout=600)
    finally:
        listener.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WITHOUT isolation" in run.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["grader"]["sandbox"].startswith("none")
    assert all(s["notes"][0].startswith("graded WITHOUT isolation") for s in report["submissions"])
    # The witnesses work: unsandboxed, the spy saw everything and its cheats passed.
    spy = {row["exercise"]: row for row in next(s for s in report["submissions"] if s["student"] == "spy")["exercises"]}
    for name in ("toy_forward", "generate_batch", "importance_weighted_loss", "feature_norms"):
        assert spy[name]["outcome"] == "passed", (name, spy[name])
    assert listener.connections >= 1
