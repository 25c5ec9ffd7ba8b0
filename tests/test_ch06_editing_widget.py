"""Chapter 06's fact editor (``course_utils.widgets.fact_editor``) on the shipped roomy fact
model: the answer pane, unknown subjects, an edit and its "moved facts" report, Undo (bit-exact),
a failing edit shown in the widget, and the pure helper ``moved_facts``.

No numbers of the checkpoint are relied on beyond what ROME guarantees on it (a layer-0 edit of
the roomy model makes the new target the top-1 answer; see tests/test_ch06_rome.py)."""

import time

import pytest
import torch

from course_utils import facts, rome
from course_utils.widgets import fact_editor, find_subject, moved_facts, one_prompt_per_fact

pytestmark = pytest.mark.usefixtures("one_thread")   # one CPU thread, as the course runs (conftest)
LAYER = 0


def _load():
    for attempt in range(3):           # the shipped checkpoint may be rewritten while tests run
        try:
            return facts.load_fact_model("roomy", device="cpu")
        except Exception:  # noqa: BLE001
            if attempt == 2:
                raise
            time.sleep(2)


@pytest.fixture(scope="module")
def roomy(single_thread):
    model, fs, vocab = _load()
    C = rome.estimate_key_covariance(model, LAYER, fs.training_tokens(), pad_id=vocab.index["."])
    return model.eval(), fs, vocab, C


@pytest.fixture
def editor(roomy):
    model, fs, vocab, C = roomy
    saved = model.blocks[LAYER].mlp.c_proj.weight.detach().clone()
    w = fact_editor(model, fs, C, layer=LAYER)
    yield w, model, fs, vocab, saved
    with torch.no_grad():                 # leave the shared model as it was, whatever happened
        model.blocks[LAYER].mlp.c_proj.weight.copy_(saved)


def _fact(fs, s, r):
    ids, _, _ = fs.render(s, r, [t for t in range(len(facts.RELATIONS[r].templates))
                                 if t != int(fs.heldout_template[s, r])][0])
    return ids


def test_a_known_subject_shows_its_trained_answer(editor):
    w, model, fs, vocab, _ = editor
    s, r = 3, 1
    w.subject.value = fs.subject_name(s).upper()          # case-insensitive
    w.relation.value = r
    true = fs.answer_word(s, r)
    assert "trained answer" in w.answer_html.value and f"<code>{true}</code>" in w.answer_html.value
    assert fs.subject_name(s).split()[-1] in w.answer_html.value     # the prompt is shown
    assert list(w.target.options) == list(facts.RELATIONS[r].answers)
    assert w.target.value != true and not w.apply.disabled
    assert find_subject(fs, "  " + fs.subject_name(s) + " ") == s


def test_an_unknown_subject_gives_a_message_not_an_exception(editor):
    w, model, fs, vocab, _ = editor
    w.subject.value = "nobody at all"
    assert "No subject is called" in w.answer_html.value and fs.subject_name(0) in w.answer_html.value
    assert w.apply.disabled
    w.apply.click()                                       # a click anyway edits nothing
    assert not w.edits and "Unknown subject" in w.status.value
    w.subject.value = fs.subject_name(0)
    assert "trained answer" in w.answer_html.value and not w.apply.disabled


def test_an_edit_changes_the_answer_reports_moved_facts_and_undo_is_exact(editor):
    w, model, fs, vocab, saved = editor
    s, r = 7, 0
    w.subject.value = fs.subject_name(s)
    w.relation.value = r
    new = next(a for a in facts.RELATIONS[r].answers if a != fs.answer_word(s, r))
    w.target.value = new
    w.apply.click()
    assert "failed" not in w.status.value, w.status.value
    assert len(w.edits) == 1 and not w.undo.disabled
    probs = facts.answer_probabilities(model, [_fact(fs, s, r)])
    assert int(probs.argmax(-1)) == vocab.index[new]
    assert f"<code>{new}</code>" in w.answer_html.value   # the pane is redrawn after the edit
    html = w.moved_html.value
    assert "efficacy" in html and "neighbourhood" in html
    count = int(html.split('class="fact-moved-count">')[1].split(" of ")[0])
    assert count >= 0 and "other facts changed their top-1 answer" in html
    rows = html.count("<tr><td ")
    assert '<table class="fact-moved-table"' in html and 1 <= rows <= 8    # the moved facts, or the largest drops
    # the headers are padded apart (they ran together in JupyterLab without it)
    assert html.count('<th style="padding:') == 4 and "border-collapse" in html
    if count:
        assert rows == min(count, 8)
    assert not torch.equal(model.blocks[LAYER].mlp.c_proj.weight, saved)
    w.undo.click()
    assert torch.equal(model.blocks[LAYER].mlp.c_proj.weight, saved)
    assert not w.edits and w.undo.disabled and "Undid" in w.status.value
    w.undo.click()                                        # nothing left: a message, no exception
    assert "Nothing to undo" in w.status.value


def test_two_stacked_edits_undo_back_to_the_original(editor):
    w, model, fs, vocab, saved = editor
    for s, r in ((11, 2), (12, 3)):
        w.subject.value = fs.subject_name(s)
        w.relation.value = r
        w.apply.click()
    assert len(w.edits) == 2
    w.undo.click()
    w.undo.click()
    assert torch.equal(model.blocks[LAYER].mlp.c_proj.weight, saved)


def test_a_failing_edit_is_shown_in_the_widget(editor, monkeypatch):
    w, model, fs, vocab, saved = editor

    def broken(*args, **kwargs):
        raise RuntimeError("value optimisation diverged")

    monkeypatch.setattr(rome, "rome_edit_model", broken)
    w.apply.click()
    assert "The edit failed" in w.status.value and "value optimisation diverged" in w.status.value
    assert not w.edits and w.undo.disabled
    assert torch.equal(model.blocks[LAYER].mlp.c_proj.weight, saved)


def test_moved_facts_counts_only_other_changed_facts(roomy):
    _, fs, vocab, _ = roomy
    prompts = one_prompt_per_fact(fs).select(range(4))
    V = len(vocab.words)
    answer = prompts.answer
    before = torch.full((4, V), 0.01)
    before[torch.arange(4), answer] = 0.9
    after = before.clone()
    other = vocab.index["."]                                # no fact's answer
    for i, p in ((0, 0.1), (1, 0.2), (2, 0.05)):         # facts 0-2 lose their answer to `other`
        after[i, answer[i]], after[i, other] = p, 0.95
    out = moved_facts(before, after, prompts, exclude=[(int(prompts.subject[0]), int(prompts.relation[0]))],
                      n=1, vocab=vocab)
    assert out["count"] == 2 and out["n_other"] == 3
    assert len(out["rows"]) == 1 and out["rows"][0]["index"] == 2      # the largest drop first
    row = out["rows"][0]
    assert row["before"] == vocab.words[int(answer[2])] and row["after"] == vocab.words[other]
    assert row["p_before"] == pytest.approx(0.9) and row["p_after"] == pytest.approx(0.05)
    assert [row["index"] for row in out["largest"]] == [2]
    wide = moved_facts(before, after, prompts, exclude=[(int(prompts.subject[0]), int(prompts.relation[0]))], n=8)
    assert [row["index"] for row in wide["rows"]] == [2, 1] == [row["index"] for row in wide["largest"]]
    assert wide["rows"][0]["before"] == int(answer[2])      # token ids without a vocab
    same = moved_facts(before, before, prompts)
    assert same["count"] == 0 and same["rows"] == [] and same["largest"] == []
    with pytest.raises(ValueError):
        moved_facts(before[:3], after, prompts)
