"""Calling the course's reference is not an answer: while the grader's sandbox runs a
learner's exercise, the reference implementation of that exercise is withheld
(course_tools/grade/references.py), however the learner's code reaches it."""

from __future__ import annotations

import functools

import pytest
import torch

from course_tools.grade import references
from course_utils import toy_models
from test_tools_grade import grade_functions, notebook_function

HONEST = """def feature_norms(W):
    return W.norm(dim=1)"""

DELEGATES = {  # each hands the work to the course's own feature_norms
    "direct": """def feature_norms(W):
    from course_utils.geometry import feature_norms as ref
    return ref(W)""",
    "partial": """import functools
from course_utils import geometry
feature_norms_partial = functools.partial(geometry.feature_norms)
def feature_norms(W):
    return feature_norms_partial(W)""",
    "swallowed": """def feature_norms(W):
    import course_utils.geometry as g
    try:
        return g.feature_norms(W)
    except BaseException:
        return W.norm(dim=1)  # the honest answer after peeking: still a delegation""",
    "wrapped": """def feature_norms(W):
    import course_utils.geometry as g
    inner = getattr(g.feature_norms, "__wrapped__", g.feature_norms)
    return inner(W) * 1.0""",
}


@pytest.fixture(scope="module")
def graded():
    definitions = {"feature_norms": notebook_function(HONEST),
                   "toy_forward": notebook_function("""def toy_forward(W, b, x, activation="relu"):
    from course_utils import toy_models
    return toy_models.toy_forward(W, b, x, activation)""")}
    rows = {}
    for label, source in DELEGATES.items():
        found, _ = grade_functions({"feature_norms": notebook_function(source)})
        rows[label] = found["feature_norms"]
    honest, _ = grade_functions(definitions)
    return rows, honest


@pytest.mark.parametrize("label", sorted(DELEGATES))
def test_a_function_that_calls_the_reference_fails(graded, label):
    rows, _ = graded
    assert rows[label]["outcome"] == "failed"
    assert "calls the course's reference implementation of `feature_norms`" in rows[label]["message"]


def test_an_honest_function_passes_and_other_references_stay_usable(graded):
    _, honest = graded
    assert honest["feature_norms"]["outcome"] == "passed"
    # toy_forward delegating to ITS reference fails; feature_norms's grading left it intact.
    assert honest["toy_forward"]["outcome"] == "failed"
    assert "reference implementation of `toy_forward`" in honest["toy_forward"]["message"]


def test_the_reference_is_restored_after_the_request():
    W = torch.randn(2, 3, 4)
    expected = toy_models.toy_forward(W, torch.zeros(2, 4), torch.rand(2, 5, 4))
    with pytest.raises(references.ReferenceCalled), references.withheld(["toy_forward"]):
        functools.partial(toy_models.toy_forward)(W, torch.zeros(2, 4), torch.rand(2, 5, 4))
    assert references.CALLED and "toy_forward" in references.CALLED[-1]
    again = toy_models.toy_forward(W, torch.zeros(2, 4), torch.rand(2, 5, 4))
    assert again.shape == expected.shape


def test_a_class_reference_is_withheld_whole():
    from course_utils.toy_models import ToyModel

    class Mine(ToyModel):  # subclassing the reference: its __init__ is the reference's
        pass

    with pytest.raises(references.ReferenceCalled), references.withheld(["ToyModel"]):
        Mine(n_features=5, n_hidden=2)
    Mine(n_features=5, n_hidden=2)  # restored
