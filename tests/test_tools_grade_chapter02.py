"""The grader's sandbox grades chapter 02's exercises that change tensors in place or take a
function argument (signed_weight_decay_, train_scaling_model) and the random generators:
the solutions' definitions pass, and wrong ones fail there as they do in the notebook."""

import base64
import json
import re
from pathlib import Path

from course_tools.grade import harvest, worker

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["correlated_batch", "anticorrelated_batch", "signed_weight_decay_", "train_scaling_model"]
PRELUDE = ("import torch\nfrom torch import Tensor\nfrom course_utils.toy_models import generate_batch\n"
           "from course_utils import scaling\nfrom tqdm.auto import tqdm\n")


def _definitions(replace: dict[str, str] | None = None) -> dict:
    """The solutions' exercise functions, defined as a notebook defines them (in __main__)."""
    source = (ROOT / "solutions" / "02_feature_geometry.py").read_text()
    namespace = {"__name__": "__main__"}
    exec(PRELUDE, namespace)
    for name in NAMES:
        code = re.search(rf"^def {name}\(.*?(?=^\S)", source, re.S | re.M).group(0)
        for old, new in (replace or {}).items():
            code = code.replace(old, new)
        exec(compile(code, f"<cell {name}>", "exec"), namespace)
    return json.loads(base64.b64decode(harvest.harvest(namespace, NAMES)))


def _grade(definitions: dict, tmp_path: Path) -> dict[str, dict]:
    specs = [{"name": name, "seeds": list(range(4)), "default_seeds": 4, "points": 1.0} for name in NAMES]
    env = worker.untrusted_env(tmp_path, {"threads": 1})
    rows = worker.evaluate(specs, definitions, 2 * 2**30, env, tmp_path, [])
    return {row["exercise"]: row for row in rows}


def test_the_solutions_pass_in_the_sandbox_and_wrong_ones_fail(tmp_path):
    rows = _grade(_definitions(), tmp_path)
    assert {name: row["outcome"] for name, row in rows.items()} == dict.fromkeys(NAMES, "passed"), rows
    wrong = _grade(_definitions({
        "    with torch.no_grad():\n        gamma": "    if True:\n        gamma",  # no torch.no_grad()
        "        decay(W, weight_decay, current_lr)\n        optimizer.step()":
            "        optimizer.step()\n        decay(W, weight_decay, current_lr)",  # decay after the step
    }), tmp_path)
    assert wrong["signed_weight_decay_"]["outcome"] == "failed"
    assert "leaf Variable" in wrong["signed_weight_decay_"]["message"], wrong["signed_weight_decay_"]
    assert wrong["train_scaling_model"]["outcome"] == "failed"
    assert "the decay comes after the Adam step" in wrong["train_scaling_model"]["message"]
