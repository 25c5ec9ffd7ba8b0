"""ipywidgets explorers.  Each is a thin layer over a pure function that the tests call directly.

``toy_model_explorer()`` — sliders for feature sparsity and importance decay retrain a small
ReLU toy model (n features into m=2 dimensions, a few seeds, best kept) and redraw WᵀW and
the feature fan.  The work happens in ``retrain_toy_model``, which returns plain tensors.

``configuration_explorer(W, density)`` — a slider over a trained sparsity sweep shows the
configuration at one sparsity (the 2-D fan or a 3-D view), its D_i and the polytopes it is
built from; ``describe_sweep_point`` does the work.

``dynamics_scrubber(steps, W_history, D, loss)`` — a slider (and play button) over training
snapshots redraws the configuration at that step beside the D_i and loss curves;
``dynamics_frame`` does the work.

``polysemanticity_explorer()`` — sliders for the width ratio m/n and the L1 strength λ
retrain a batch of Lecomte et al.'s autoencoders and show one feature × neuron weight matrix,
sorted so that collisions stand out, beside the polysemantic-neuron count and its
prediction; ``retrain_polysemantic`` does the work.

``u_and_explorer()`` — sliders for the neurons d, the wiring probability p and the features
on l of the universal-AND construction redraw its measured and predicted read-offs and say
how many of the C(m, 2) pairs no neuron covers; ``u_and_summary`` does the work.

``latent_browser(activations, token_strings, logit_weights, vocab)`` — pick an SAE latent (from a
dropdown of chosen ones, or by typing its number; ``latent_number`` checks what was typed) and
see its top-activating contexts (every token shaded by its activation), a histogram of its
activations and the tokens it promotes and suppresses; ``latent_summary`` does the work and
``latent_html`` renders it.

``memorization_explorer(sweep)`` — a slider over the training-set sizes T of a trained sweep
(chapter 07) redraws the feature directions, the training examples' hidden vectors and the
feature and data-point dimensionalities; ``memorization_frame`` does the work.

``orthogonality_explorer()`` — sliders for the dimension d, the number of directions n and the
sparsity k (chapter 00) draw n random unit directions in R^d and k-sparse signals, and show
their coherence against its prediction and the Welch bound, the interference the one-step
decoder sees, and how often ISTA and the one-step decoder recover the signals;
``orthogonality_summary`` does the work, ``describe_orthogonality`` and ``orthogonality_frame``
render it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import geometry
from .toy_models import ToyModel, evaluate_loss, importance_decay, select_best, train


@dataclass
class ExplorerResult:
    """One retrained model: the best seed's weights and what the explorer prints about it."""

    W: Tensor  # (1, hidden, features)
    b: Tensor  # (1, features)
    loss: float
    importance: Tensor  # (features,)
    represented: int  # features with ‖W_i‖ > 0.5

    def summary(self) -> str:
        n = self.W.shape[-1]
        return f"{self.represented} of {n} features represented in {self.W.shape[1]} dimensions; loss {self.loss:.5f}"


def retrain_toy_model(
    sparsity: float,
    decay: float,
    n_features: int = 5,
    n_hidden: int = 2,
    seeds: int = 3,
    steps: int = 2_000,
    seed: int = 0,
    lr: float = 1e-2,
) -> ExplorerResult:
    """Train ``seeds`` ReLU toy models with S = ``sparsity`` and importance ``decay``**i and
    return the lowest-loss one.  Deterministic for fixed arguments; a few seconds on a CPU.

    It uses a higher learning rate (1e-2, cosine decay) than the chapter's 1e-3 recipe, so
    that 2,000 steps reach the solutions the recipe reaches in 10,000.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"importance decay must be in (0, 1], got {decay}")
    importance = importance_decay(n_features, decay)
    model = ToyModel(n_features, n_hidden, n_instances=seeds, feature_probability=1.0 - sparsity,
                     importance=importance, device="cpu", generator=torch.Generator().manual_seed(seed))
    train(model, steps=steps, lr=lr, schedule="cosine", seed=seed, progress=False, fast=True)
    losses = evaluate_loss(model, batch_size=20_000)
    best = int(select_best(model, losses, seeds)[0])
    W = model.W.detach()[best : best + 1].clone()
    b = model.b.detach()[best : best + 1].clone()
    represented = int((geometry.feature_norms(W) > 0.5).sum())
    return ExplorerResult(W, b, float(losses[best]), importance, represented)


def toy_model_explorer(n_features: int = 5, steps: int = 2_000):
    """Sliders for sparsity (log scale) and importance decay; redraws on release.

    Returns the widget box: make it the last expression of a cell to show it.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .plots import plot_feature_fan, plot_WtW

    density = widgets.FloatLogSlider(value=0.05, base=10, min=-3, max=0, step=0.1,
                                     description="1 - S", continuous_update=False, readout_format=".3f")
    decay = widgets.FloatSlider(value=1.0, min=0.5, max=1.0, step=0.05, description="importance decay",
                                continuous_update=False, style={"description_width": "initial"})
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            result = retrain_toy_model(1.0 - density.value, decay.value, n_features=n_features, steps=steps)
            print(result.summary())
            plot_WtW(result.W, result.b, titles=["WᵀW and b"])
            plot_feature_fan(result.W, titles=["feature directions"], importance=result.importance)
            plt.show()

    density.observe(redraw, names="value")
    decay.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([density, decay]), output])


# --------------------------------------------------------------------------------------
# Chapter 02: configurations across a sweep, and over training
# --------------------------------------------------------------------------------------


def describe_sweep_point(W: Tensor, density: Tensor, index: int) -> str:
    """What the explorer prints for instance ``index`` of a sweep: 1/(1-S), dimensions per
    feature, represented features and the polytopes (tegum factors) they form.

    W: (instances, hidden, features); density: (instances,) feature probabilities 1 - S.
    """
    if not 0 <= index < W.shape[0]:
        raise ValueError(f"index must be in [0, {W.shape[0]}), got {index}")
    Wk = W[index : index + 1]
    represented = int((geometry.feature_norms(Wk) > 0.5).sum())
    names = geometry.summarise_configuration(geometry.describe_configuration(Wk)[0], Wk)
    dpf = float(geometry.dimensions_per_feature(Wk)[0])
    return (f"1/(1-S) = {1 / float(density[index]):.2f}: {represented} of {W.shape[-1]} features in "
            f"{W.shape[1]} dimensions, dimensions per feature {dpf:.3f}; configuration: {names}")


def _draw_configuration(W: Tensor, title: str, view: tuple[float, float] | None = None):
    """The 2-D fan or the 3-D view of one instance (W: (1, hidden, features)); ``view`` is
    the 3-D camera's (elevation, azimuth)."""
    from .plots import plot_feature_3d, plot_feature_fan, plot_WtW

    if W.shape[1] == 2:
        return plot_feature_fan(W, titles=[title])
    if W.shape[1] == 3:
        return plot_feature_3d(W, titles=[title], view=view)
    return plot_WtW(W, torch.zeros(1, W.shape[-1]), titles=[title])


def configuration_explorer(W: Tensor, density: Tensor):
    """A slider over the sweep's sparsities; shows the configuration, D_i and its polytopes.

    W: (instances, hidden, features) trained weights, one instance per entry of ``density``.
    With hidden = 3, two more sliders turn the 3-D view (azimuth and elevation): the plot is
    a still matplotlib image, redrawn, so it turns the same way in JupyterLab, Colab and
    Binder without a JavaScript plotting backend.
    Returns the widget box: make it the last expression of a cell to show it.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .plots import plot_dimensionality_strip

    W, density = torch.as_tensor(W), torch.as_tensor(density)
    if W.shape[0] != density.shape[0]:
        raise ValueError(f"W has {W.shape[0]} instances but density has {density.shape[0]} entries")
    options = [(f"{1 / float(p):.2f}", k) for k, p in enumerate(density)]
    slider = widgets.SelectionSlider(options=options, value=0, description="1/(1-S)", continuous_update=False)
    output = widgets.Output()
    turn = []
    if W.shape[1] == 3:
        turn = [widgets.IntSlider(value=-60, min=-180, max=180, step=15, description="azimuth",
                                  continuous_update=False),
                widgets.IntSlider(value=30, min=-90, max=90, step=15, description="elevation",
                                  continuous_update=False)]

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            k = slider.value
            print(describe_sweep_point(W, density, k))
            view = (turn[1].value, turn[0].value) if turn else None
            _draw_configuration(W[k : k + 1], "feature directions", view)
            plot_dimensionality_strip(geometry.feature_dimensionality(W[k : k + 1])[0],
                                      geometry.feature_norms(W[k : k + 1])[0], title="D_i")
            plt.show()

    for control in [slider, *turn]:
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, widgets.HBox(turn), output] if turn else [slider, output])


def dynamics_frame(steps, W_history: Tensor, D: Tensor, loss: Tensor, index: int):
    """One frame of the scrubber: the configuration at snapshot ``index`` and the D_i / loss
    curves with a marker at its step.  W_history: (snapshots, hidden, features); D:
    (snapshots, features); loss: (snapshots,).  Returns (text, [figures])."""
    from .plots import plot_dynamics

    if not 0 <= index < len(steps):
        raise ValueError(f"index must be in [0, {len(steps)}), got {index}")
    Wk = W_history[index][None]
    names = geometry.summarise_configuration(geometry.describe_configuration(Wk)[0], Wk)
    text = (f"step {int(steps[index])}: loss {float(loss[index]):.5f}; configuration: {names}; "
            f"D_i = {', '.join(f'{d:.2f}' for d in D[index].tolist())}")
    figures = [_draw_configuration(Wk, f"step {int(steps[index])}"),
               plot_dynamics(steps, D, loss, marker=int(steps[index]))]
    return text, figures


def dynamics_scrubber(steps, W_history: Tensor, D: Tensor, loss: Tensor):
    """A slider and play button over training snapshots of one instance (see ``dynamics_frame``).

    Returns the widget box: make it the last expression of a cell to show it.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    if not (len(steps) == W_history.shape[0] == D.shape[0] == loss.shape[0]):
        raise ValueError("steps, W_history, D and loss need one entry per snapshot")
    slider = widgets.IntSlider(value=len(steps) - 1, min=0, max=len(steps) - 1, description="snapshot",
                               continuous_update=False)
    play = widgets.Play(min=0, max=len(steps) - 1, step=1, interval=400)
    widgets.jslink((play, "value"), (slider, "value"))
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            text, _ = dynamics_frame(steps, W_history, D, loss, slider.value)
            print(text)
            plt.show()

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([play, slider]), output])


# --------------------------------------------------------------------------------------
# Chapter 03: incidental polysemanticity
# --------------------------------------------------------------------------------------


@dataclass
class PolysemanticityResult:
    """A batch of trained autoencoders: the first instance's W, and counts over all of them."""

    n: int
    m: int
    l1: float
    W: Tensor  # (n, m), instance 0
    counts: Tensor  # (instances,) polysemantic neurons
    prediction: float
    one_active_weight: float

    def summary(self) -> str:
        mean = float(self.counts.double().mean())
        return (f"n={self.n}, m={self.m}, λ={self.l1:g}: {mean:.2f} polysemantic neurons on average over "
                f"{self.counts.numel()} seeds (prediction {self.prediction:.2f}, n²/(4m) = "
                f"{self.n**2 / (4 * self.m):.2f}); {self.one_active_weight:.0%} of features have exactly "
                "one active weight")


def retrain_polysemantic(ratio: float, l1: float, n: int = 16, instances: int = 32, steps: int = 3_000,
                         seed: int = 0, count=None, predict=None) -> PolysemanticityResult:
    """Train ``instances`` autoencoders with m = round(ratio · n) neurons and L1 strength ``l1``
    by gradient descent (lr 0.05, the fast setting of the chapter) and count polysemantic
    neurons.  Trains on the fast path (closed-form step, ``course_utils._fast``) so a slider
    move answers in about a second on a CPU; deterministic for fixed arguments.  ``count(W)``
    and ``predict(n, m)`` (default: the course's ``polysemantic_neurons`` and
    ``predicted_polysemantic``) are the chapter's, the learner's when theirs passed."""
    from . import polysemanticity as poly

    if not ratio >= 1:
        raise ValueError(f"m/n must be at least 1 (more neurons than features), got {ratio}")
    if l1 < 0:
        raise ValueError(f"λ must be >= 0, got {l1}")
    m = int(round(ratio * n))
    run = poly.train_autoencoders(n, m, instances, l1=l1, optimizer="gd", steps=steps, seed=seed,
                                  device="cpu", progress=False, record_every=steps, fast=True)
    count = count or poly.polysemantic_neurons
    predict = predict or poly.predicted_polysemantic
    return PolysemanticityResult(n, m, float(l1), run.W[0], torch.as_tensor(count(run.W)),
                                 float(predict(n, m)),
                                 poly.privileged_basis(run.W)["one_active_weight"])


def polysemanticity_explorer(n: int = 16, steps: int = 3_000, count=None, predict=None):
    """Sliders for m/n and λ; each change retrains and redraws (counting with ``count`` and
    predicting with ``predict``, see ``retrain_polysemantic``).  Make it the last expression of
    a cell to show it."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .plots import plot_polysemantic_weights

    ratio = widgets.SelectionSlider(options=[1.5, 2, 3, 4, 6, 8], value=2, description="m / n",
                                    continuous_update=False)
    l1 = widgets.SelectionSlider(options=[0.0, 0.003, 0.01, 0.03, 0.1], value=0.03, description="λ",
                                 continuous_update=False)
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            result = retrain_polysemantic(ratio.value, l1.value, n=n, steps=steps, count=count, predict=predict)
            print(result.summary())
            plot_polysemantic_weights([result.W], titles=[f"seed 0: n={result.n}, m={result.m}, λ={result.l1:g}"],
                                      size=4.5)
            plt.show()

    ratio.observe(redraw, names="value")
    l1.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([ratio, l1]), output])


# --------------------------------------------------------------------------------------
# Chapter 04: computation in superposition
# --------------------------------------------------------------------------------------


def u_and_summary(m: int, d: int, p: float, l: int, seed: int = 0, batch: int = 256, construction=None) -> dict:
    """One U-AND setting, measured and predicted: m boolean features, d neurons each wired to
    each feature with probability p, inputs with l features on.  ``construction`` is the class
    that builds it, ``construction(m, d, p, generator)`` (the chapter passes the learner's
    ``UAnd``); by default the course's ``computation.UAnd``.

    Returns a dict: ``measured``, ``predicted`` (first order) and ``predicted_exact``, each
    "both" / "one" / "none" -> mean read-off; ``uncovered`` (the fraction of pairs no neuron is
    wired to) and ``predicted_uncovered`` = e^(−d p²); ``d_p2`` = d·p²; ``n_ands`` = C(m, 2);
    ``neurons`` = d; and ``m``, ``p``, ``l``.  Deterministic for fixed arguments; raises
    ``ValueError`` with a plain message for an impossible setting (e.g. l > m)."""
    import math

    from . import computation as C

    C._check_u_and(m, d, p)
    if int(l) != l or not 2 <= l <= m:
        raise ValueError(f"l (features on) must be a whole number from 2 to m = {m}, got l = {l}: "
                         "an AND needs two features on, and no more than m features can be on")
    l = int(l)
    generator = torch.Generator().manual_seed(seed)
    built = (C.UAnd if construction is None else construction)(m, d, p, generator)
    return {
        "measured": C.measure_u_and_readoffs(built, l, batch, generator),
        "predicted": C.predicted_u_and_readoffs(p, l),
        "predicted_exact": C.predicted_u_and_readoffs(p, l, exact=True),
        "uncovered": C.uncovered_fraction(built),
        "predicted_uncovered": math.exp(-d * p * p),
        "d_p2": d * p * p,
        "n_ands": math.comb(m, 2),
        "neurons": d,
        "m": m,
        "p": p,
        "l": l,
    }


def describe_u_and(summary: dict) -> str:
    """The explorer's text line for a ``u_and_summary`` result."""
    text = (f"d = {summary['neurons']} neurons compute C({summary['m']},2) = {summary['n_ands']} ANDs; "
            f"d·p² = {summary['d_p2']:.2f}, uncovered pairs {summary['uncovered']:.1%} "
            f"(predicted e^(−d·p²) = {summary['predicted_uncovered']:.1%})")
    if summary["uncovered"] > 0.1:
        text += ("\n  d·p² is too small: no neuron is wired to both features of the uncovered pairs, so their "
                 "ANDs cannot be computed at all (the read-offs below are over covered pairs only)")
    measured, predicted = summary["measured"], summary["predicted"]
    text += "\n  read-off with l = {}: ".format(summary["l"]) + ", ".join(
        f"{name} on {measured[name]:.3f} (predicted {predicted[name]:.3f})" for name in ("both", "one", "none"))
    return text


def u_and_explorer(m: int = 100, d: int = 400, p: float = 0.1, l: int = 3, seed: int = 0, batch: int = 64,
                   construction=None):
    """Sliders for d (neurons), p (wiring probability) and l (features on) of the U-AND
    construction with m features; each change rebuilds the wiring and redraws measured vs
    predicted read-offs (about 0.1 s with m = 100).  Lower p until d·p² < 1 to watch the
    construction fail.  ``construction``: the class that builds it, ``construction(m, d, p,
    generator)`` (the learner's ``UAnd``); the course's ``computation.UAnd`` by default.  Make
    it the last expression of a cell to show it."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .plots import plot_u_and_readoffs

    style = {"description_width": "initial"}
    neurons = widgets.IntSlider(value=d, min=min(50, d), max=max(1000, d), step=50, description="d (neurons)",
                                continuous_update=False, style=style)
    wiring = widgets.FloatSlider(value=p, min=min(0.01, p), max=max(0.3, p), step=0.01, description="p (wiring)",
                                 continuous_update=False, readout_format=".2f", style=style)
    on = widgets.IntSlider(value=l, min=min(2, l), max=max(12, l), step=1, description="l (features on)",
                           continuous_update=False, style=style)
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            try:
                summary = u_and_summary(m, neurons.value, wiring.value, on.value, seed=seed, batch=batch,
                                        construction=construction)
            except ValueError as error:
                print(f"Cannot build this setting: {error}")
                return
            print(describe_u_and(summary))
            plot_u_and_readoffs(summary["measured"], summary["predicted"], summary["predicted_exact"],
                                title=f"m = {m}, d = {summary['neurons']}, p = {summary['p']:.2f}, l = {summary['l']}")
            plt.show()

    for slider in (neurons, wiring, on):
        slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([neurons, wiring, on]), output])


# --------------------------------------------------------------------------------------
# Chapter 05: the latent browser
# --------------------------------------------------------------------------------------


def _latent_count(activations, n_latents: int | None) -> int:
    """How many latents ``activations`` holds: its last axis, or ``n_latents`` for a callable."""
    if callable(activations):
        if n_latents is None:
            raise ValueError("with a callable for activations, pass n_latents (or logit_weights) too")
        return int(n_latents)
    if len(activations.shape) != 3:
        raise ValueError("activations must be (n_seq, ctx, n_latents) or a callable latent -> (n_seq, ctx), "
                         f"got shape {tuple(activations.shape)}")
    if n_latents is not None and n_latents != activations.shape[-1]:
        raise ValueError(f"activations has {activations.shape[-1]} latents but n_latents = {n_latents}")
    return int(activations.shape[-1])


def _whole(value, name: str) -> int:
    """``value`` as an int (Python or NumPy integers; not bools or floats), else a ValueError."""
    import operator

    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


def _as_numpy(values):
    import numpy as np

    if isinstance(values, Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def latent_summary(latent: int, activations, token_strings, logit_weights=None, vocab=None, k: int = 8,
                   window: tuple[int, int] = (8, 3), bins: int = 30, n_logits: int = 10,
                   n_latents: int | None = None) -> dict:
    """Everything the latent browser shows about one SAE latent, as plain Python data.

    activations: (n_seq, ctx, n_latents) tensor or ndarray of the SAE's latent activations on
        every token of ``n_seq`` sequences (≥ 0, mostly 0); or a callable ``latent -> (n_seq,
        ctx)`` that computes one latent's activations on demand (then pass ``n_latents``, or
        ``logit_weights`` whose first axis gives it).
    token_strings: n_seq lists of ctx strings, the decoded tokens.
    logit_weights: optional (n_latents, d_vocab) direct effect of each latent on the logits,
        W_dec @ W_U; ``vocab`` (d_vocab strings) names its columns.

    Returns a dict with ``latent``, ``n_tokens``, ``n_firing``, ``firing_rate`` (fraction of
    tokens with activation > 0), ``max``, ``dead`` (True when the latent never fires) and
    ``message`` (a one-line description); ``top``: up to ``k`` contexts, highest activation
    first (ties in (seq, pos) order), each a dict with ``seq``, ``pos``, ``activation``,
    ``tokens`` — [(token, activation of this latent on it)] from ``window[0]`` tokens before to
    ``window[1]`` after, clipped at the sequence's edges — and ``center``, the index of (seq,
    pos) in ``tokens``; ``histogram``: {"counts", "edges"} of the activations > 0 over
    ``bins`` equal bins from 0 to the max (both empty for a dead latent); and, with
    ``logit_weights``, ``promoted`` / ``suppressed``: the ``n_logits`` tokens with the largest
    / most negative weight, [(token, weight)] in that order.  Raises ``ValueError`` with a
    plain message for a latent out of range, mismatched shapes or k < 1.
    """
    import numpy as np

    if logit_weights is not None and n_latents is None and callable(activations):
        n_latents = int(logit_weights.shape[0])
    total = _latent_count(activations, n_latents)
    latent = _whole(latent, "latent")
    if not 0 <= latent < total:
        raise ValueError(f"latent must be in [0, {total}), got {latent}")
    if _whole(k, "k (contexts to show)") < 1:
        raise ValueError(f"k (contexts to show) must be >= 1, got {k}")
    if len(window) != 2 or min(_whole(w, "window") for w in window) < 0:
        raise ValueError(f"window must be two whole numbers >= 0 (tokens before, after), got {window!r}")
    if _whole(bins, "bins") < 1 or _whole(n_logits, "n_logits") < 1:
        raise ValueError(f"bins and n_logits must be >= 1, got {bins} and {n_logits}")
    acts = _as_numpy(activations(latent) if callable(activations) else activations[..., latent])
    if acts.ndim != 2:
        raise ValueError(f"one latent's activations must be (n_seq, ctx), got shape {acts.shape}")
    n_seq, ctx = acts.shape
    if len(token_strings) != n_seq:
        raise ValueError(f"token_strings has {len(token_strings)} sequences but activations has {n_seq}")
    for s, row in enumerate(token_strings):
        if len(row) != ctx:
            raise ValueError(f"token_strings[{s}] has {len(row)} tokens but activations has {ctx} per sequence")
    if logit_weights is not None:
        if vocab is None:
            raise ValueError("pass vocab (the token strings) with logit_weights")
        if tuple(logit_weights.shape) != (total, len(vocab)):
            raise ValueError(f"logit_weights must be (n_latents, d_vocab) = ({total}, {len(vocab)}), "
                             f"got {tuple(logit_weights.shape)}")

    flat = acts.reshape(-1)
    firing = flat > 0
    n_firing = int(firing.sum())
    peak = float(flat[firing].max()) if n_firing else 0.0
    summary = {"latent": latent, "n_tokens": int(flat.size), "n_firing": n_firing,
               "firing_rate": n_firing / flat.size if flat.size else 0.0, "max": peak, "dead": n_firing == 0}
    if n_firing:
        summary["message"] = (f"latent {latent} fires on {summary['firing_rate']:.2%} of {flat.size:,} tokens "
                              f"({n_firing:,}); max activation {peak:.3g}")
    else:
        summary["message"] = f"latent {latent} never fires on these {flat.size:,} tokens: a dead latent"

    order = np.argsort(-flat, kind="stable")[: min(int(k), n_firing)]
    before, after = int(window[0]), int(window[1])
    top = []
    for index in order.tolist():
        s, p = divmod(index, ctx)
        start, stop = max(0, p - before), min(ctx, p + after + 1)
        tokens = [(str(token_strings[s][q]), float(acts[s, q])) for q in range(start, stop)]
        top.append({"seq": s, "pos": p, "activation": float(acts[s, p]), "tokens": tokens, "center": p - start})
    summary["top"] = top
    if n_firing:
        counts, edges = np.histogram(flat[firing], bins=int(bins), range=(0.0, peak))
        summary["histogram"] = {"counts": counts.tolist(), "edges": edges.tolist()}
    else:
        summary["histogram"] = {"counts": [], "edges": []}
    if logit_weights is not None:
        weights = _as_numpy(logit_weights[latent]).reshape(-1)
        n = min(int(n_logits), weights.size)
        up = np.argsort(-weights, kind="stable")[:n]
        down = np.argsort(weights, kind="stable")[:n]
        summary["promoted"] = [(str(vocab[i]), float(weights[i])) for i in up.tolist()]
        summary["suppressed"] = [(str(vocab[i]), float(weights[i])) for i in down.tolist()]
    return summary


def _token_text(token: str) -> str:
    """A token as HTML text: escaped, with newlines and tabs made visible."""
    import html

    return html.escape(token.replace("\n", "↵").replace("\t", "⇥"), quote=True)


def latent_html(summary: dict) -> str:
    """The latent browser's pane for a ``latent_summary`` result, as an HTML string.

    A header line (the summary's message); each top context as a row of tokens, every token a
    <span> whose orange background has opacity activation / max (its activation in the
    tooltip), the context's own token bold and underlined; then the promoted and suppressed
    tokens with their direct-logit weights, when the summary has them.  Token text is escaped
    with ``html.escape``.  Deterministic: the same summary gives the same string.
    """
    import html

    peak = summary["max"] if summary["max"] > 0 else 1.0
    parts = ['<div class="latent-browser" style="font-family: monospace; line-height: 1.9">',
             f'<div class="latent-header"><b>{html.escape(summary["message"])}</b></div>']
    if summary["dead"]:
        parts.append('<div class="latent-dead">No contexts to show: this latent is zero on every token.</div>')
    for rank, context in enumerate(summary["top"]):
        spans = []
        for q, (token, value) in enumerate(context["tokens"]):
            opacity = min(max(value / peak, 0.0), 1.0)
            style = f"background-color: rgba(255, 140, 0, {opacity:.2f}); padding: 1px 2px; white-space: pre"
            if q == context["center"]:
                style += "; font-weight: bold; text-decoration: underline"
            spans.append(f'<span style="{style}" title="{value:.3f}">{_token_text(token)}</span>')
        parts.append(f'<div class="latent-context">{rank + 1}. <span style="color: #666">'
                     f'[{context["activation"]:.2f} · seq {context["seq"]}, pos {context["pos"]}]</span> '
                     + " ".join(spans) + "</div>")
    for key, word in (("promoted", "promotes"), ("suppressed", "suppresses")):
        if key in summary:
            items = ", ".join(f"<code>{_token_text(token)}</code> ({weight:+.2f})" for token, weight in summary[key])
            parts.append(f'<div class="latent-{key}"><b>{word}</b>: {items}</div>')
    parts.append("</div>")
    return "\n".join(parts)


def latent_number(value, n_latents: int) -> int:
    """The latent a learner typed, as an int in [0, n_latents); a ``ValueError`` with a message
    meant for the browser's pane otherwise ("latent must be in [0, 256), got 300": the
    pane shows "Cannot show latent 300: " before it)."""
    try:
        latent = _whole(value, "latent")
    except ValueError:
        try:
            latent = int(str(value).strip())
        except ValueError:
            raise ValueError(f"type a latent's number (a whole number from 0 to {n_latents - 1}), "
                             f"not {value!r}") from None
    if not 0 <= latent < n_latents:
        raise ValueError(f"latent must be in [0, {n_latents}), got {latent}")
    return latent


def latent_browser(activations, token_strings, logit_weights=None, vocab=None, latents=None, labels=None,
                   k: int = 8, window: tuple[int, int] = (8, 3), bins: int = 30, n_latents: int | None = None):
    """Browse an SAE's latents: pick one and see its top contexts, a histogram of its
    activations and the tokens it promotes and suppresses (see ``latent_summary`` for the
    arguments).

    The picker is a number box over every latent; with ``latents`` (a list of interesting
    ones) a dropdown sits next to it, each entry named by ``labels`` (e.g. "latent 37:
    inside quotes") or "latent i", and choosing an entry puts its number in the box.  Returns
    a VBox whose children are the picker row (an HBox: [dropdown,] number box), the HTML pane
    (``latent_html``) and the histogram's Output.  A bad latent (out of range: see
    ``latent_number``) shows a message in the pane, never a traceback.  Make it the last
    expression of a cell to show it.
    """
    import html

    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .plots import plot_latent_histogram

    if isinstance(activations, Tensor):
        activations = activations.detach().float().cpu()
    elif not callable(activations):
        activations = torch.as_tensor(_as_numpy(activations))
    if logit_weights is not None and n_latents is None and callable(activations):
        n_latents = int(logit_weights.shape[0])
    total = _latent_count(activations, n_latents)  # checks the convention before building anything
    dropdown = None
    if latents is None:
        if labels is not None:
            raise ValueError("labels name the entries of latents: pass latents too")
        first = 0
    else:
        latents = [int(i) for i in latents]
        if not latents:
            raise ValueError("latents must name at least one latent")
        labels = [f"latent {i}" for i in latents] if labels is None else [str(label) for label in labels]
        if len(labels) != len(latents):
            raise ValueError(f"got {len(labels)} labels for {len(latents)} latents")
        dropdown = widgets.Dropdown(options=list(zip(labels, latents)), value=latents[0], description="latent",
                                    layout=widgets.Layout(width="max-content"))
        first = latents[0]
    number = widgets.IntText(value=first, description="latent" if dropdown is None else "or number",
                             layout=widgets.Layout(width="180px"))
    pane = widgets.HTML()
    histogram = widgets.Output()

    def redraw(_=None):
        try:
            latent = latent_number(number.value, total)
            summary = latent_summary(latent, activations, token_strings, logit_weights, vocab, k=k,
                                     window=window, bins=bins, n_latents=n_latents)
        except ValueError as error:
            pane.value = (f'<div class="latent-error">Cannot show latent {html.escape(str(number.value))}: '
                          f"{html.escape(str(error))}</div>")
            histogram.clear_output()
            return
        pane.value = latent_html(summary)
        with histogram:
            histogram.clear_output(wait=True)
            fig = plot_latent_histogram(summary)
            plt.show()
            plt.close(fig)

    def chosen(change):
        if number.value == change["new"]:
            redraw()
        else:
            number.value = change["new"]  # redraws

    number.observe(redraw, names="value")
    if dropdown is not None:
        dropdown.observe(chosen, names="value")
    redraw()
    row = widgets.HBox([number] if dropdown is None else [dropdown, number])
    return widgets.VBox([row, pane, histogram])


# --------------------------------------------------------------------------------------
# Chapter 06: the fact editor (ROME on a fact model)
# --------------------------------------------------------------------------------------


def find_subject(fact_set, text: str) -> int | None:
    """The index of the subject of ``fact_set`` whose name is ``text`` (its pieces joined by
    spaces, e.g. "zor ven alik"), matched case-insensitively and ignoring extra spaces; None
    when no subject has that name."""
    wanted = " ".join(str(text).lower().split())
    for s in range(fact_set.n_subjects):
        if fact_set.subject_name(s).lower() == wanted:
            return s
    return None


def one_prompt_per_fact(fact_set):
    """A ``facts.FactPrompts`` of one training prompt per fact (subject, relation): its first
    training template, in the order of ``fact_set.prompts("train")`` (subject, then relation)."""
    prompts = fact_set.prompts("train")
    seen, keep = set(), []
    for i in range(len(prompts)):
        key = (int(prompts.subject[i]), int(prompts.relation[i]))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return prompts.select(keep)


def fact_answer_summary(model, fact_set, s: int, r: int, k: int = 3) -> dict:
    """What ``model`` says about fact (s, r) of ``fact_set`` on its first training template:
    dict(subject (name), relation (name), prompt (the prompt's words after <bos>), top (the k
    most probable next tokens as (word, probability)), true (the trained answer word), p_true
    (its probability), rank (its rank among all tokens, 1 = top))."""
    from . import facts

    ids, _, _ = fact_set.render(s, r, fact_set.training_templates(s, r)[0])
    probs = facts.answer_probabilities(model, [ids])[0]
    words = fact_set.vocab.words
    values, index = probs.topk(min(k, len(probs)))
    true = fact_set.answer_word(s, r)
    true_id = fact_set.vocab.index[true]
    return dict(subject=fact_set.subject_name(s), relation=facts.RELATIONS[r].name,
                prompt=" ".join(words[t] for t in ids[1:]),
                top=[(words[int(i)], float(v)) for v, i in zip(values, index)],
                true=true, p_true=float(probs[true_id]), rank=int((probs > probs[true_id]).sum()) + 1)


def fact_answer_html(summary: dict) -> str:
    """The fact editor's answer pane for a ``fact_answer_summary`` result, as an HTML string."""
    import html

    cell = 'style="padding: 1px 12px 1px 4px; text-align: left"'
    rows = "".join(f"<tr><td {cell}>{j + 1}.</td><td {cell}><code>{html.escape(w)}</code></td>"
                   f"<td {cell}>{p:.3f}</td></tr>" for j, (w, p) in enumerate(summary["top"]))
    return (f'<div class="fact-answer"><div>prompt: <code>{html.escape(summary["prompt"])} …</code></div>'
            f'<table class="fact-top" style="border-collapse: collapse">{rows}</table>'
            f'<div>trained answer: <b><code>{html.escape(summary["true"])}</code></b> '
            f'(p = {summary["p_true"]:.3f}, rank {summary["rank"]})</div></div>')


def moved_facts(before_probs: Tensor, after_probs: Tensor, prompts, exclude=(), n: int = 8,
                vocab=None) -> dict:
    """Which facts an edit moved, from next-token probabilities before and after it.

    before_probs, after_probs: (n_prompts, vocab) probabilities on ``prompts`` (a
    ``facts.FactPrompts``, one prompt per fact, e.g. ``one_prompt_per_fact``); ``exclude``: the
    (subject, relation) pairs not to count (the edited fact).  Returns dict(count: the number of
    the other facts whose top-1 answer changed, n_other: how many other facts there are, rows:
    up to ``n`` of the changed ones, largest drop in p(trained answer) first, each dict(index,
    subject, relation (indices), before, after (top-1 token ids, or words with ``vocab``),
    p_before, p_after (of the trained answer), drop = p_before − p_after, changed (top-1 changed:
    True in ``rows``)), and largest: the same for up to ``n`` other facts with the largest
    positive drop whether or not their top-1 changed (what moved most when nothing flipped).
    Pure: no model."""
    before_probs, after_probs = torch.as_tensor(before_probs), torch.as_tensor(after_probs)
    if before_probs.shape != after_probs.shape or before_probs.dim() != 2 or len(before_probs) != len(prompts):
        raise ValueError(f"before_probs and after_probs must both be ({len(prompts)}, vocab), got "
                         f"{tuple(before_probs.shape)} and {tuple(after_probs.shape)}")
    exclude = {(int(a), int(b)) for a, b in exclude}
    idx = torch.arange(len(prompts))
    answer = torch.as_tensor(prompts.answer, dtype=torch.long)
    top_before, top_after = before_probs.argmax(-1), after_probs.argmax(-1)
    p_before, p_after = before_probs[idx, answer], after_probs[idx, answer]
    other = torch.tensor([(int(s), int(r)) not in exclude for s, r in zip(prompts.subject, prompts.relation)],
                         dtype=torch.bool)
    changed = other & (top_before != top_after)
    drop = p_before - p_after
    name = (lambda t: vocab.words[int(t)]) if vocab is not None else int

    def table(mask):
        chosen = sorted(mask.nonzero().flatten().tolist(), key=lambda i: (-float(drop[i]), i))[:max(int(n), 0)]
        return [dict(index=i, subject=int(prompts.subject[i]), relation=int(prompts.relation[i]),
                     before=name(top_before[i]), after=name(top_after[i]), p_before=float(p_before[i]),
                     p_after=float(p_after[i]), drop=float(drop[i]), changed=bool(changed[i])) for i in chosen]

    return dict(count=int(changed.sum()), n_other=int(other.sum()), rows=table(changed),
                largest=table(other & (drop > 0)))


def moved_facts_html(moved: dict, fact_set, metrics: dict | None = None, title: str = "") -> str:
    """The fact editor's result pane: the edit's own ``rome.edit_metrics`` (when given) and
    a ``moved_facts`` result as a table (subject, relation, answer before → after, p(trained
    answer) before → after); when no other fact's top-1 changed, the table lists the largest
    drops (``moved_facts(...)["largest"]``) instead."""
    import html

    from . import facts

    parts = ['<div class="fact-moved">']
    if title:
        parts.append(f"<div><b>{html.escape(title)}</b></div>")
    if metrics is not None:
        parts.append(f'<div class="fact-metrics">efficacy {metrics["efficacy"]:.2f} '
                     f'(top-1 {metrics["efficacy_top1"]:.2f}, p(new) {metrics["p_new"]:.3f}, '
                     f'p(old) {metrics["p_old"]:.3f}) · paraphrase {metrics["paraphrase"]:.2f} · '
                     f'neighbourhood {metrics["neighbourhood"]:.2f}</div>')
    parts.append(f'<div class="fact-moved-count">{moved["count"]} of {moved["n_other"]} other facts '
                 f"changed their top-1 answer.</div>")
    rows = moved["rows"]
    if not rows and moved.get("largest"):
        rows = moved["largest"]
        parts.append('<div class="fact-moved-note">None flipped; the largest drops in p(trained answer):</div>')
    if rows:
        # explicit padding and borders: ipywidgets' HTML resets table styles, and the headers ran together
        cell = 'style="padding: 2px 14px 2px 4px; text-align: left; border-bottom: 1px solid #ddd"'
        head = 'style="padding: 2px 14px 2px 4px; text-align: left; border-bottom: 2px solid #999"'
        parts.append('<table class="fact-moved-table" style="border-collapse: collapse"><tr>'
                     + "".join(f"<th {head}>{h}</th>" for h in ("subject", "relation", "answer before → after",
                                                                "p(trained answer) before → after"))
                     + "</tr>")
        for row in rows:
            parts.append(f"<tr><td {cell}>{html.escape(fact_set.subject_name(row['subject']))}</td>"
                         f"<td {cell}>{html.escape(facts.RELATIONS[row['relation']].name)}</td>"
                         f"<td {cell}>{html.escape(str(row['before']))} → {html.escape(str(row['after']))}</td>"
                         f"<td {cell}>{row['p_before']:.3f} → {row['p_after']:.3f}</td></tr>")
        parts.append("</table>")
    parts.append("</div>")
    return "\n".join(parts)


def fact_editor(model, fact_set, C, layer: int = 0, prefixes=((),), n_moved: int = 8):
    """Edit one fact of a fact model with ROME and see what else moved (chapter 06).

    model, fact_set: from ``facts.load_fact_model``; C: the key covariance of block ``layer``
    (``rome.estimate_key_covariance``); prefixes: ROME's context prefixes
    (``rome.context_prefixes``); n_moved: the most rows of the "moved facts" table.

    Type a subject's name (its pieces joined by spaces, e.g. as in ``fact_set.subject_name``;
    case-insensitive) and pick a relation: the pane shows the relation's first training
    template for that subject, the model's top-3 next tokens and the trained answer.  Pick a new
    target and press "Apply edit": ``rome.rome_edit_model`` edits the model, then the pane
    below shows ``rome.edit_metrics`` of the edit and the other facts (one prompt each,
    ``one_prompt_per_fact``) whose top-1 answer changed (``moved_facts``).  "Undo" takes back
    the most recent edit (``rome.undo_edit``; edits stack).

    **Edits are made in place on ``model``**: its block-``layer`` MLP down-projection changes,
    and stays changed after the widget is gone unless undone.  Undo subtracts the stored ΔW and
    then, if the weight is within float rounding of the copy saved before that edit, restores
    that copy, so undoing every edit gives back the original weights bit for bit.  Errors in the
    callbacks (a failed edit, an unknown subject) are shown in the widget, never raised.

    Returns a VBox with these attributes: ``subject`` (Text), ``relation`` (Dropdown of
    (name, index)), ``answer_html`` (HTML: prompt and answers), ``target`` (Dropdown of the
    relation's answer words), ``apply`` and ``undo`` (Buttons; ``.click()`` triggers them),
    ``status`` (HTML: messages and errors), ``moved_html`` (HTML: the last edit's result),
    ``edits`` (the stack: list of dicts with delta_W, request, subject, relation, target),
    ``fact_prompts`` (the ``one_prompt_per_fact`` prompts) and ``refresh()`` (redraws the
    answer pane).  Make it the last expression of a cell to show it.
    """
    import html

    import ipywidgets as widgets

    from . import facts, rome

    weight = model.blocks[layer].mlp.c_proj.weight     # also checks the layer exists
    fact_prompts = one_prompt_per_fact(fact_set)
    edits: list[dict] = []
    cache: dict = {}

    subject = widgets.Text(value=fact_set.subject_name(0), description="subject")
    relation = widgets.Dropdown(options=[(rel.name, i) for i, rel in enumerate(facts.RELATIONS)], value=0,
                                description="relation")
    answer_html = widgets.HTML()
    target = widgets.Dropdown(options=list(facts.RELATIONS[0].answers), description="new target")
    apply = widgets.Button(description="Apply edit", button_style="warning")
    undo = widgets.Button(description="Undo", disabled=True)
    status = widgets.HTML()
    moved_html = widgets.HTML()

    def message(text: str, kind: str = "info") -> None:
        colour = {"error": "#b00020", "info": "#333"}[kind]
        status.value = f'<div class="fact-{kind}" style="color: {colour}">{html.escape(text)}</div>'

    def current():
        return find_subject(fact_set, subject.value), int(relation.value)

    def refresh(_=None):
        try:
            s, r = current()
            answers = list(facts.RELATIONS[r].answers)
            if list(target.options) != answers:
                target.options = answers
            if s is None:
                examples = ", ".join(f'"{fact_set.subject_name(i)}"' for i in range(min(5, fact_set.n_subjects)))
                answer_html.value = (f'<div class="fact-unknown">No subject is called '
                                     f'"{html.escape(subject.value)}". Try one of {html.escape(examples)} '
                                     f"(names are pieces joined by spaces; {fact_set.n_subjects} subjects).</div>")
                apply.disabled = True
                return
            apply.disabled = False
            true = fact_set.answer_word(s, r)
            if target.value == true:      # default to a different answer than the trained one
                target.value = next(a for a in answers if a != true)
            answer_html.value = fact_answer_html(fact_answer_summary(model, fact_set, s, r))
        except Exception as error:  # noqa: BLE001 -- shown, never raised into the void
            answer_html.value = f'<div class="fact-error">Cannot show this fact: {html.escape(repr(error))}</div>'

    def probabilities():
        if "probs" not in cache:
            cache["probs"] = facts.answer_probabilities(model, fact_prompts)
        return cache["probs"]

    def on_apply(_=None):
        try:
            s, r = current()
            if s is None:
                message(f'Unknown subject "{subject.value}": nothing edited.', "error")
                return
            word = target.value
            before = probabilities()
            request = rome.fact_request(fact_set, s, r, word)
            saved = weight.detach().clone()
            out = rome.rome_edit_model(model, layer, request, C, prefixes=prefixes)
            edits.append(dict(delta_W=out["delta_W"], saved=saved, request=request, subject=s, relation=r,
                              target=word))
            cache.pop("probs", None)
            after = probabilities()
            moved = moved_facts(before, after, fact_prompts, exclude=[(s, r)], n=n_moved, vocab=fact_set.vocab)
            metrics = rome.edit_metrics(model, request)
            title = (f"Edited {fact_set.subject_name(s)} / {facts.RELATIONS[r].name}: "
                     f"{fact_set.answer_word(s, r)} → {word}")
            moved_html.value = moved_facts_html(moved, fact_set, metrics, title)
            message(f"Edit {len(edits)} applied in place to block {layer}'s MLP ({len(edits)} on the stack).")
        except Exception as error:  # noqa: BLE001
            message(f"The edit failed: {error!r}", "error")
        undo.disabled = not edits
        refresh()

    def on_undo(_=None):
        try:
            if not edits:
                message("Nothing to undo.")
                return
            edit = edits.pop()
            rome.undo_edit(model, layer, edit["delta_W"])
            saved, delta = edit["saved"], edit["delta_W"]
            eps = torch.finfo(weight.dtype).eps
            tol = 4 * eps * (float(saved.abs().max()) + float(delta.abs().max()))
            with torch.no_grad():
                if float((weight.detach() - saved).abs().max()) <= tol:
                    weight.copy_(saved)        # take off the rounding left by (W + ΔW) − ΔW
            cache.pop("probs", None)
            moved_html.value = ""
            message(f"Undid the edit of {fact_set.subject_name(edit['subject'])} / "
                    f"{facts.RELATIONS[edit['relation']].name} → {edit['target']} ({len(edits)} left).")
        except Exception as error:  # noqa: BLE001
            message(f"Undo failed: {error!r}", "error")
        undo.disabled = not edits
        refresh()

    subject.observe(refresh, names="value")
    relation.observe(refresh, names="value")
    apply.on_click(on_apply)
    undo.on_click(on_undo)
    refresh()

    box = widgets.VBox([widgets.HBox([subject, relation]), answer_html, widgets.HBox([target, apply, undo]),
                        status, moved_html])
    box.subject, box.relation, box.answer_html, box.target = subject, relation, answer_html, target
    box.apply, box.undo, box.status, box.moved_html = apply, undo, status, moved_html
    box.edits, box.fact_prompts, box.refresh = edits, fact_prompts, refresh
    return box


# --------------------------------------------------------------------------------------
# Chapter 07: memorization and double descent, a slider over the training-set size T
# --------------------------------------------------------------------------------------


def describe_memorization(sweep, index: int) -> str:
    """What the T explorer prints for instance ``index`` of a sweep over T (a
    ``memorization.Sweep``): its losses, the two weighted dimensionalities, and how close the
    longest feature directions and the longest training-example hidden vectors (those over half
    the longest, ``memorization.polygon``) come to a regular polygon (m = 2 only)."""
    from . import memorization as mz

    if not 0 <= index < len(sweep.T):
        raise ValueError(f"index must be in [0, {len(sweep.T)}), got {index}")
    T = int(sweep.T[index])
    text = (f"T = {T}: train loss {float(sweep.train_loss[index]):.3f}, test loss {float(sweep.test_loss[index]):.3f}; "
            f"dimensionality of features {float(sweep.feature_D[index]):.3f}, "
            f"of training examples {float(sweep.data_D[index]):.3f}")
    if sweep.W.shape[1] == 2:
        parts = []
        for what, vectors in (("features", sweep.W[index:index + 1]),
                              ("training examples", sweep.H[index:index + 1, :T].transpose(1, 2))):
            gaps = mz.polygon(vectors)[0]
            parts.append(f"{what}: the {gaps.numel()} longest are {mz.polygon_error(gaps):.0f}° "
                         f"from a regular {gaps.numel()}-gon")
        text += "\n" + "; ".join(parts)
    return text


def memorization_frame(sweep, index: int):
    """One frame of the T explorer: the text of ``describe_memorization`` and a figure of three
    panels, the feature directions W_i, the hidden vectors h_t = W x_t of the training examples
    (both drawn from the origin; m = 2), and the two weighted dimensionalities against T with a
    marker at this T.  Returns (text, figure)."""
    import matplotlib.pyplot as plt

    if sweep.W.shape[1] != 2:
        raise ValueError(f"the T explorer draws a 2-D hidden space, got m = {sweep.W.shape[1]}")
    text = describe_memorization(sweep, index)
    T = int(sweep.T[index])
    W, H = sweep.W[index].numpy(), sweep.H[index, :T].numpy()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.3), gridspec_kw=dict(width_ratios=[1, 1, 1.4]))
    for ax, vectors, title, colour in ((axes[0], W.T, "feature directions W_i", "C0"),
                                       (axes[1], H, f"training examples h_t (T = {T})", "C3")):
        lengths = (vectors ** 2).sum(-1) ** 0.5
        longest = max(float(lengths.max()), 1e-12)
        for (x, y), length in zip(vectors, lengths):
            ax.plot([0, x], [0, y], color=colour, lw=1.2, alpha=0.25 + 0.75 * float(length) / longest)
        ax.scatter(vectors[:, 0], vectors[:, 1], color=colour, s=10, zorder=3)
        lim = 1.1 * longest
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    Ts = sweep.T.numpy()
    axes[2].plot(Ts, sweep.feature_D.numpy(), "o-", color="C0", label="features")
    axes[2].plot(Ts, sweep.data_D.numpy(), "s-", color="C3", label="training examples")
    axes[2].axvline(T, color="grey", lw=1, ls="--")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("training-set size T")
    axes[2].set_ylabel("weighted dimensionality")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return text, fig


def memorization_explorer(sweep):
    """A slider over the training-set sizes of a trained sweep (a ``memorization.Sweep``, m = 2):
    redraws the feature directions, the training examples' hidden vectors and the two
    dimensionalities at that T (``memorization_frame``).  Returns the widget box: make it the
    last expression of a cell to show it."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    if sweep.W.shape[1] != 2:
        raise ValueError(f"the T explorer draws a 2-D hidden space, got m = {sweep.W.shape[1]}")
    options = [(str(int(T)), k) for k, T in enumerate(sweep.T)]
    slider = widgets.SelectionSlider(options=options, value=0, description="T", continuous_update=False)
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            text, _ = memorization_frame(sweep, slider.value)
            print(text)
            plt.show()

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, output])


# --------------------------------------------------------------------------------------
# Chapter 00: nearly orthogonal directions and compressed sensing
# --------------------------------------------------------------------------------------


def orthogonality_summary(d: int, n: int, k: int, trials: int = 20, seed: int = 0, ista=None, coherence=None,
                          lam: float = 0.05, steps: int = 300, b: float = -0.5) -> dict:
    """One setting of the chapter-00 explorer: n random unit directions in R^d (the columns of a
    sensing matrix W (d, n), ``orthogonality.sensing_matrix``) and ``trials`` nonnegative
    k-sparse signals f with x = W f.  ``ista(W, x, lam, steps)`` and ``coherence(V)`` are the
    implementations to use (the learner's, as the chapter's checks hand them over); the
    course's ``orthogonality.ista`` and ``orthogonality.coherence`` by default.

    Returns a dict: ``d``, ``n``, ``k``, ``trials``, ``delta`` = d/n, ``rho`` = k/d; ``mu``, the
    coherence of W's columns, its ``predicted`` median for random sets
    (``coherence_prediction``), the ``welch`` bound and the sparsity ``identifiable`` by
    coherence alone (k < (1 + 1/μ)/2); ``interference`` (the standard deviation of Wᵀx − f on
    the inactive features, the crosstalk the one-step decoder must threshold away) and its
    prediction ``interference_predicted`` = sqrt(k E[f_i²] / d) with E[f_i²] = 7/3 for values
    uniform on [1, 2]; ``ista_rate`` and ``one_step_rate`` (fractions recovered,
    ``orthogonality.recovered``); ``rho_dt``, the Donoho–Tanner edge at this δ; and for the
    figure ``cosines`` (the off-diagonal |cos| of W's columns), ``f``, ``projection`` (Wᵀx) and
    ``ista_estimate`` of the first trial.  Deterministic for fixed arguments; raises
    ``ValueError`` for an impossible setting."""
    import math

    from . import orthogonality as ortho

    for name, value in (("d", d), ("n", n), ("k", k), ("trials", trials)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value}")
    d, n, k = int(d), int(n), int(k)
    if d < 2 or n < 2:
        raise ValueError(f"d and n must be at least 2 (pairs of directions), got d = {d}, n = {n}")
    if k > min(d, n):
        raise ValueError(f"k (nonzeros) must be at most d = {d} and n = {n}, got k = {k}: "
                         "no decoder recovers more nonzeros than it has measurements")
    ista = ortho.ista if ista is None else ista
    coherence = ortho.coherence if coherence is None else coherence
    generator = torch.Generator().manual_seed(seed)
    W = ortho.sensing_matrix(d, n, generator)
    f = ortho.sparse_signals(trials, n, k, generator)
    x = ortho.measure(W, f)
    projection = x @ W
    f_ista = ista(W, x, lam, steps)
    f_one = ortho.one_step_decode(W, x, b)
    C = ortho.cosines(W.T).abs()
    off = ~torch.eye(n, dtype=torch.bool)
    crosstalk = (projection - f)[f == 0]
    mu = float(coherence(W.T))
    return {
        "d": d, "n": n, "k": k, "trials": trials, "delta": d / n, "rho": k / d,
        "mu": mu,
        "predicted": ortho.coherence_prediction(n, d),
        "welch": ortho.welch_bound(n, d),
        "identifiable": ortho.identifiable_sparsity(mu),
        "interference": float(crosstalk.std()) if crosstalk.numel() > 1 else 0.0,
        "interference_predicted": math.sqrt(k * 7 / 3 / d),
        "ista_rate": float(ortho.recovered(W, x, f_ista, f).double().mean()),
        "one_step_rate": float(ortho.recovered(W, x, f_one, f).double().mean()),
        "rho_dt": float(ortho.dt_curve([min(d / n, 1.0)])[0]),
        "b": b,
        "cosines": C[off],
        "f": f[0], "projection": projection[0], "ista_estimate": f_ista[0].detach(),
    }


def describe_orthogonality(summary: dict) -> str:
    """The chapter-00 explorer's text for an ``orthogonality_summary`` result."""
    s = summary
    lines = [
        f"d = {s['d']} dimensions, n = {s['n']} directions (δ = d/n = {s['delta']:.2f}), "
        f"k = {s['k']} nonzeros (ρ = k/d = {s['rho']:.2f})",
        f"  coherence μ = {s['mu']:.3f} (random sets: about {s['predicted']:.3f}; Welch floor {s['welch']:.3f}); "
        f"coherence alone guarantees k ≤ {s['identifiable']}",
        f"  interference on the inactive features: std {s['interference']:.3f} "
        f"(predicted sqrt(k·E[f²]/d) = {s['interference_predicted']:.3f}), against the bias |b| = {abs(s['b']):.2f}",
        f"  recovered: ISTA {s['ista_rate']:.2f}, one-step ReLU(Wᵀx + b) {s['one_step_rate']:.2f} "
        f"of {s['trials']} signals; the Donoho–Tanner edge at this δ is ρ = {s['rho_dt']:.2f}",
    ]
    return "\n".join(lines)


def orthogonality_frame(summary: dict):
    """One frame of the chapter-00 explorer: the text of ``describe_orthogonality`` and a figure
    of three panels: the histogram of the pairwise |cos| of W's columns with μ and the Welch
    bound marked; one signal f beside what the one-step decoder sees (Wᵀx, true value plus
    interference, and the threshold −b) and ISTA's estimate; the (δ, ρ) plane with the
    Donoho–Tanner curve and this setting marked.  Returns (text, figure)."""
    import matplotlib.pyplot as plt

    from . import orthogonality as ortho

    s = summary
    text = describe_orthogonality(s)
    fig, (hist, signal, plane) = plt.subplots(1, 3, figsize=(11, 3.2), gridspec_kw=dict(width_ratios=[1, 1.4, 1]))
    hist.hist(s["cosines"].numpy(), bins=40, color="C0", alpha=0.8)
    hist.axvline(s["mu"], color="k", lw=1.2, label=f"μ = {s['mu']:.2f}")
    hist.axvline(s["welch"], color="C3", lw=1.2, ls="--", label=f"Welch {s['welch']:.2f}")
    hist.set_xlabel("|cos| between two directions")
    hist.set_yticks([])
    hist.legend(fontsize=7)
    hist.set_title("pairwise overlaps", fontsize=9)
    index = torch.arange(s["n"])
    signal.plot(index, s["projection"].numpy(), ".", color="grey", ms=3, label="Wᵀx (one-step input)")
    signal.axhline(-s["b"], color="C1", lw=1, ls="--", label="threshold −b")
    active = s["f"] > 0
    signal.plot(index[active], s["f"][active].numpy(), "o", color="k", mfc="none", label="true f")
    signal.plot(index, s["ista_estimate"].numpy(), "x", color="C2", ms=4, label="ISTA")
    signal.set_xlabel("feature i")
    signal.legend(fontsize=7, loc="upper right")
    signal.set_title(f"one signal, k = {s['k']}", fontsize=9)
    deltas = torch.linspace(0.02, 1, 50)
    plane.plot(deltas.numpy(), ortho.dt_curve(deltas).numpy(), color="k", label="Donoho–Tanner")
    plane.plot([s["delta"]], [s["rho"]], "o", color="C2" if s["ista_rate"] >= 0.5 else "C3", ms=8,
               label=f"here: ISTA {s['ista_rate']:.2f}")
    plane.set_xlim(0, 1)
    plane.set_ylim(0, 1)
    plane.set_xlabel("δ = d/n")
    plane.set_ylabel("ρ = k/d")
    plane.legend(fontsize=7, loc="upper left")
    plane.set_title("where recovery is possible", fontsize=9)
    fig.tight_layout()
    return text, fig


def orthogonality_explorer(d: int = 50, n: int = 200, k: int = 5, trials: int = 20, ista=None, coherence=None):
    """Sliders for d (dimensions), n (directions) and k (nonzeros per signal): each change
    draws a new W (d, n) and ``trials`` signals and redraws ``orthogonality_frame`` (about 0.2 s
    at n = 200).  ``ista`` and ``coherence``: the implementations to use (the learner's); the
    course's by default.  Returns the widget box: make it the last expression of a cell."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    style = {"description_width": "initial"}
    dims = widgets.IntSlider(value=d, min=2, max=max(400, d), step=1, description="d (dimensions)",
                             continuous_update=False, style=style)
    directions = widgets.IntSlider(value=n, min=2, max=max(800, n), step=1, description="n (directions)",
                                   continuous_update=False, style=style)
    nonzeros = widgets.IntSlider(value=k, min=1, max=max(100, k), step=1, description="k (nonzeros)",
                                 continuous_update=False, style=style)
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            try:
                summary = orthogonality_summary(dims.value, directions.value, nonzeros.value, trials,
                                                ista=ista, coherence=coherence)
            except ValueError as error:
                print(f"Cannot draw this setting: {error}")
                return
            text, _ = orthogonality_frame(summary)
            print(text)
            plt.show()

    for slider in (dims, directions, nonzeros):
        slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([dims, directions, nonzeros]), output])
