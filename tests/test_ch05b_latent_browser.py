"""Chapter 05's latent browser: ``latent_summary``, ``latent_html``, the histogram and the widget,
on a hand-made example of 5 sequences x 6 tokens and 3 latents.

Latent 0 fires exactly on the token "cat" (once per sequence, at the first and the last
position among others, so windows clip at both edges); latent 1 fires on a few tokens with
ties; latent 2 never fires (dead).
"""

import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_utils import plots
from course_utils.widgets import latent_browser, latent_html, latent_number, latent_summary

TOKENS = [
    ["the", "cat", "sat", "on", "the", "mat"],
    ["a", "dog", "and", "a", "cat", "ran"],
    ["<b>", "bold", "&", "cat", '"', "x"],
    ["cat", "is", "here", "ok", "so", "fine"],
    ["no", "pets", "here", "at", "all", "cat"],
]
CAT = {(3, 0): 4.0, (2, 3): 3.0, (0, 1): 2.0, (1, 4): 1.0, (4, 5): 0.5}  # latent 0: (seq, pos) -> activation
VOCAB = ["cat", "dog", "mat", "<b>", "the"]


def make_activations() -> torch.Tensor:
    acts = torch.zeros(5, 6, 3)
    for (s, p), value in CAT.items():
        assert TOKENS[s][p] == "cat"
        acts[s, p, 0] = value
    acts[2, 0, 1], acts[2, 1, 1] = 1.5, 0.75  # "<b>", "bold"
    acts[0, 0, 1] = acts[0, 4, 1] = 0.75  # both "the"s: a three-way tie with "bold"
    return acts


def make_logit_weights() -> torch.Tensor:
    W = torch.zeros(3, len(VOCAB))
    W[0] = torch.tensor([3.0, -1.0, 0.5, 0.0, -2.0])
    W[1] = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4])
    return W


def test_top_contexts_are_the_highest_activations_with_every_token_shaded():
    summary = latent_summary(0, make_activations(), TOKENS, k=3, window=(2, 1))
    assert [(c["seq"], c["pos"], c["activation"]) for c in summary["top"]] == [(3, 0, 4.0), (2, 3, 3.0), (0, 1, 2.0)]
    first, second, third = summary["top"]
    # (3, 0) is the first token: the window clips at the start, so there is nothing before it
    assert first["tokens"] == [("cat", 4.0), ("is", 0.0)] and first["center"] == 0
    assert second["tokens"] == [("bold", 0.0), ("&", 0.0), ("cat", 3.0), ('"', 0.0)] and second["center"] == 2
    assert third["tokens"] == [("the", 0.0), ("cat", 2.0), ("sat", 0.0)] and third["center"] == 1
    # k larger than the number of firing tokens: all 5, and (4, 5) clips at the end of its sequence
    every = latent_summary(0, make_activations(), TOKENS, k=8, window=(2, 1))
    assert len(every["top"]) == 5
    last = every["top"][-1]
    assert (last["seq"], last["pos"]) == (4, 5)
    assert last["tokens"] == [("at", 0.0), ("all", 0.0), ("cat", 0.5)] and last["center"] == 2
    # the default window, 8 before and 3 after, covers a whole 6-token sequence around position 5
    assert [t for t, _ in latent_summary(0, make_activations(), TOKENS)["top"][-1]["tokens"]] == TOKENS[4]


def test_ties_keep_sequence_order_and_neighbouring_activations_are_kept():
    summary = latent_summary(1, make_activations(), TOKENS, window=(8, 3))
    assert [(c["seq"], c["pos"]) for c in summary["top"]] == [(2, 0), (0, 0), (0, 4), (2, 1)]
    assert summary["top"][0]["tokens"] == [("<b>", 1.5), ("bold", 0.75), ("&", 0.0), ("cat", 0.0)]
    assert summary["top"][2]["tokens"][0] == ("the", 0.75)  # the other "the" in (0, 4)'s window


def test_firing_rate_max_and_histogram():
    summary = latent_summary(0, make_activations(), TOKENS, bins=4)
    assert summary["n_tokens"] == 30 and summary["n_firing"] == 5
    assert summary["firing_rate"] == pytest.approx(5 / 30) and summary["max"] == 4.0 and not summary["dead"]
    # 0.5 | 1.0 | 2.0 | 3.0 and 4.0 in bins of width 1 from 0 to the max (the last bin is closed)
    assert summary["histogram"]["counts"] == [1, 1, 1, 2]
    assert summary["histogram"]["edges"] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert summary["message"] == "latent 0 fires on 16.67% of 30 tokens (5); max activation 4"
    assert sum(latent_summary(1, make_activations(), TOKENS)["histogram"]["counts"]) == 4


def test_promoted_and_suppressed_tokens_by_direct_logit_weight():
    summary = latent_summary(0, make_activations(), TOKENS, make_logit_weights(), VOCAB)
    assert summary["promoted"] == [("cat", 3.0), ("mat", 0.5), ("<b>", 0.0), ("dog", -1.0), ("the", -2.0)]
    assert summary["suppressed"] == summary["promoted"][::-1]
    short = latent_summary(0, make_activations(), TOKENS, make_logit_weights(), VOCAB, n_logits=2)
    assert short["promoted"] == [("cat", 3.0), ("mat", 0.5)] and short["suppressed"] == [("the", -2.0), ("dog", -1.0)]
    assert "promoted" not in latent_summary(0, make_activations(), TOKENS)


def test_dead_latent_has_no_contexts_and_says_so():
    summary = latent_summary(2, make_activations(), TOKENS)
    assert summary["dead"] and summary["top"] == [] and summary["n_firing"] == 0 and summary["max"] == 0.0
    assert summary["firing_rate"] == 0.0 and summary["histogram"] == {"counts": [], "edges": []}
    assert summary["message"] == "latent 2 never fires on these 30 tokens: a dead latent"
    page = latent_html(summary)
    assert "a dead latent" in page and "No contexts to show" in page and "latent-context" not in page


def test_numpy_and_callable_activations_give_the_same_summary():
    acts = make_activations()
    reference = latent_summary(1, acts, TOKENS, make_logit_weights(), VOCAB)
    assert latent_summary(1, acts.numpy(), TOKENS, make_logit_weights(), VOCAB) == reference
    assert latent_summary(1, lambda i: acts[..., i], TOKENS, make_logit_weights(), VOCAB) == reference
    assert latent_summary(1, lambda i: acts[..., i].numpy(), TOKENS, n_latents=3)["top"] == reference["top"]
    with pytest.raises(ValueError, match="pass n_latents"):
        latent_summary(1, lambda i: acts[..., i], TOKENS)
    with pytest.raises(ValueError, match=r"latent must be in \[0, 3\), got 3"):
        latent_summary(3, lambda i: acts[..., i], TOKENS, n_latents=3)


def test_bad_arguments_raise_plain_messages():
    acts = make_activations()
    with pytest.raises(ValueError, match=r"latent must be in \[0, 3\), got 3"):
        latent_summary(3, acts, TOKENS)
    with pytest.raises(ValueError, match=r"latent must be in \[0, 3\), got -1"):
        latent_summary(-1, acts, TOKENS)
    with pytest.raises(ValueError, match="latent must be a whole number"):
        latent_summary(1.5, acts, TOKENS)
    with pytest.raises(ValueError, match="k .* must be >= 1, got 0"):
        latent_summary(0, acts, TOKENS, k=0)
    with pytest.raises(ValueError, match="window"):
        latent_summary(0, acts, TOKENS, window=(-1, 3))
    with pytest.raises(ValueError, match=r"must be \(n_seq, ctx, n_latents\)"):
        latent_summary(0, acts[..., 0], TOKENS)
    with pytest.raises(ValueError, match="token_strings has 4 sequences but activations has 5"):
        latent_summary(0, acts, TOKENS[:4])
    with pytest.raises(ValueError, match=r"token_strings\[2\] has 5 tokens but activations has 6"):
        latent_summary(0, acts, [*TOKENS[:2], TOKENS[2][:5], *TOKENS[3:]])
    with pytest.raises(ValueError, match=r"logit_weights must be \(n_latents, d_vocab\) = \(3, 5\), got \(3, 4\)"):
        latent_summary(0, acts, TOKENS, make_logit_weights()[:, :4], VOCAB)
    with pytest.raises(ValueError, match="pass vocab"):
        latent_summary(0, acts, TOKENS, make_logit_weights())


def test_html_shades_tokens_marks_the_context_token_and_escapes_text():
    summary = latent_summary(1, make_activations(), TOKENS, make_logit_weights(), VOCAB)
    page = latent_html(summary)
    assert page == latent_html(summary), "deterministic"
    assert page.count('class="latent-context"') == 4
    base = "padding: 1px 2px; white-space: pre"
    # the context's own token: full opacity (1.5 / max 1.5), bold and underlined; its text escaped
    assert (f'<span style="background-color: rgba(255, 140, 0, 1.00); {base}; font-weight: bold; '
            'text-decoration: underline" title="1.500">&lt;b&gt;</span>') in page
    # a neighbour with half the max activation: half opacity, not bold
    assert f'<span style="background-color: rgba(255, 140, 0, 0.50); {base}" title="0.750">bold</span>' in page
    assert f'<span style="background-color: rgba(255, 140, 0, 0.00); {base}" title="0.000">&amp;</span>' in page
    assert "<b></span>" not in page and ">bold</span>" in page
    assert "1. <span style=\"color: #666\">[1.50 · seq 2, pos 0]</span>" in page
    promoted = '<div class="latent-promoted"><b>promotes</b>: <code>the</code> (+0.40), <code>&lt;b&gt;</code> (+0.30)'
    suppressed = '<div class="latent-suppressed"><b>suppresses</b>: <code>cat</code> (+0.00), <code>dog</code> (+0.10)'
    assert promoted in page and suppressed in page
    cat = latent_html(latent_summary(0, make_activations(), TOKENS))
    assert "title=\"0.000\">&quot;</span>" in cat and "latent-promoted" not in cat
    assert "<b>latent 0 fires on 16.67% of 30 tokens (5); max activation 4</b>" in cat


def test_latent_histogram_plot():
    summary = latent_summary(0, make_activations(), TOKENS, bins=4)
    fig = plots.plot_latent_histogram(summary)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [1, 1, 1, 2]
    assert [p.get_x() for p in ax.patches] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert ax.get_title() == "latent 0: fires on 16.67% of tokens"
    dead = plots.plot_latent_histogram(latent_summary(2, make_activations(), TOKENS))
    assert len(dead.axes[0].patches) == 0 and dead.axes[0].texts[0].get_text() == "never fires (dead latent)"
    _, ax = plt.subplots()
    assert plots.plot_latent_histogram(summary, log=True, ax=ax) is ax.figure and ax.get_yscale() == "log"
    plt.close("all")


def test_browser_renders_and_follows_the_picker():
    box = latent_browser(make_activations(), TOKENS, make_logit_weights(), VOCAB)
    row, pane, histogram = box.children
    (picker,) = row.children
    assert picker.description == "latent" and picker.value == 0
    assert "latent 0 fires on 16.67% of 30 tokens" in pane.value and ">cat</span>" in pane.value
    assert "<b>promotes</b>: <code>cat</code> (+3.00)" in pane.value
    picker.value = 1
    assert "latent 1 fires on 13.33% of 30 tokens" in pane.value and "&lt;b&gt;" in pane.value
    picker.value = 2
    assert "a dead latent" in pane.value and "latent-context" not in pane.value
    picker.value = 7  # out of range: a message in the pane, no exception
    assert "Cannot show latent 7: latent must be in [0, 3), got 7" in pane.value
    picker.value = -1
    assert "Cannot show latent -1" in pane.value
    picker.value = 0
    assert "latent 0 fires" in pane.value
    plt.close("all")


def test_browser_dropdown_over_chosen_latents():
    box = latent_browser(make_activations().numpy(), TOKENS, latents=[2, 0, 9],
                         labels=["latent 2: dead", "latent 0: cat (F1 1.00)", "latent 9: a typo"])
    row, pane, _ = box.children
    picker, number = row.children
    assert [label for label, _ in picker.options] == ["latent 2: dead", "latent 0: cat (F1 1.00)", "latent 9: a typo"]
    assert picker.value == 2 and number.value == 2 and "a dead latent" in pane.value
    picker.value = 0
    assert number.value == 0 and "latent 0 fires" in pane.value and "latent-promoted" not in pane.value
    picker.value = 9
    assert "Cannot show latent 9: latent must be in [0, 3), got 9" in pane.value
    number.value = 1  # "or type any number": the box shows any latent, listed or not
    assert "latent 1 fires" in pane.value
    number.value = 300
    assert "Cannot show latent 300: latent must be in [0, 3), got 300" in pane.value
    picker.value = 2  # the dropdown still works after typing
    assert number.value == 2 and "a dead latent" in pane.value
    default = latent_browser(make_activations(), TOKENS, latents=[1])
    assert default.children[0].children[0].options[0] == ("latent 1", 1)
    with pytest.raises(ValueError, match="2 labels for 1 latents"):
        latent_browser(make_activations(), TOKENS, latents=[1], labels=["a", "b"])
    with pytest.raises(ValueError, match="pass latents too"):
        latent_browser(make_activations(), TOKENS, labels=["a"])
    with pytest.raises(ValueError, match="n_seq, ctx, n_latents"):
        latent_browser(make_activations()[..., 0], TOKENS)
    plt.close("all")


def test_summary_is_fast_on_a_chapter_sized_cache():
    """200 sequences x 64 tokens x 512 latents (26 MB, the chapter's size): well under 0.2 s."""
    generator = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(200, 64, 512, generator=generator) - 2.0)
    tokens = [[f"w{(s * 64 + p) % 97}" for p in range(64)] for s in range(200)]
    W = torch.randn(512, 1000, generator=generator)
    vocab = [f"v{i}" for i in range(1000)]
    latent_summary(3, acts, tokens, W, vocab)  # warm up
    start = time.perf_counter()
    for latent in range(5):
        summary = latent_summary(latent, acts, tokens, W, vocab)
        latent_html(summary)
    assert (time.perf_counter() - start) / 5 < 0.1
    assert summary["n_firing"] == int((acts[..., 4] > 0).sum())
    assert len(summary["top"]) == 8 and summary["top"][0]["activation"] == pytest.approx(float(acts[..., 4].max()))
    assert np.all(np.diff([c["activation"] for c in summary["top"]]) <= 0)


def test_latent_number_accepts_numbers_in_range_and_explains_the_rest():
    assert latent_number(0, 256) == 0 and latent_number(255, 256) == 255 and latent_number(" 12 ", 256) == 12
    assert latent_number(np.int64(7), 256) == 7
    with pytest.raises(ValueError, match=r"latent must be in \[0, 256\), got 256"):
        latent_number(256, 256)
    with pytest.raises(ValueError, match=r"latent must be in \[0, 256\), got -1"):
        latent_number(-1, 256)
    with pytest.raises(ValueError, match="type a latent's number"):
        latent_number("cat", 256)
    with pytest.raises(ValueError, match="type a latent's number"):
        latent_number(2.5, 256)
