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

from test_tools_grade import CHAPTER, SPY, SPY_SETUP, _Listener, nbs, processes_with



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
        assert spy[name]["outcome"] == "passed", (name, spy[name]["outcome"], spy[name].get("message"))
    assert listener.connections >= 1


ESCAPEE = """import os, subprocess, sys, time
code = "import os, time; os.setsid(); hog = bytearray(300 * 2**20); hog[::4096] = b'x' * len(hog[::4096]); time.sleep(60)"
subprocess.Popen([sys.executable, "-c", code, sys.argv[1]])
time.sleep(60)"""


def test_the_memory_watch_and_the_kill_reach_a_process_that_left_the_session(tmp_path):
    """Under bubblewrap a learner's process that calls setsid leaves the kernel's session but
    not its sandbox's PID namespace: its memory counts and the kill ends it."""
    import secrets
    import time

    from course_tools.grade import isolation, limits

    bwrap, why = isolation.find_bwrap()
    if bwrap is None:
        import pytest

        pytest.skip(why)
    token = f"superposition-escapee-{secrets.token_hex(4)}"
    argv = isolation.Isolation(bwrap).command([sys.executable, "-c", ESCAPEE, token], [tmp_path], tmp_path)
    process = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        escaped = []
        while time.monotonic() < deadline and (limits.session_rss(process.pid) or 0) < 300 * 2**20:
            time.sleep(0.2)
        escaped = [pid for pid in processes_with(token) if os.getsid(pid) != process.pid]
        assert escaped, "the escapee left the session"
        assert limits.session_rss(process.pid) >= 300 * 2**20  # its 300 MB count
    finally:
        limits.kill_session(process.pid)
        process.wait(timeout=10)
    time.sleep(0.5)
    assert processes_with(token) == []
