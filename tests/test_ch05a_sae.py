"""Unit tests of course_utils.sae: the synthetic ground truth, the five SAEs (hand-computed forward
passes and straight-through gradients), their fast losses (course_utils._fast.sae) against the
plain ones, resampling, the training loop, the metrics, and a seeded reproduction of Sharkey et
al.'s dictionary recovery (smaller than the paper's 512 in 256)."""

import math

import pytest
import torch

from course_utils import sae
from course_utils._fast.sae import fast_loss, kth_largest_positive, sparse_decode, sparse_is_faster
from course_utils.sae import (
    ARCHITECTURES,
    BatchTopKSAE,
    GatedSAE,
    JumpReLUFunction,
    JumpReLUSAE,
    ReLUSAE,
    StepFunction,
    SyntheticFeatures,
    TopKSAE,
    dead_fraction,
    dense_fraction,
    evaluate,
    feature_probabilities,
    fraction_recovered,
    fraction_variance_explained,
    l0,
    make_sae,
    max_cosine_similarity,
    mmcs,
    resample_dead_latents,
    shrinkage,
    train_sae,
)

KWARGS = {"relu": {}, "topk": {"k": 3}, "batchtopk": {"k": 3}, "jumprelu": {}, "gated": {}}


def make(architecture, d_in=8, n_latents=16, seed=0, **kwargs):
    return make_sae(architecture, d_in, n_latents, device="cpu", generator=torch.Generator().manual_seed(seed),
                    **{**KWARGS[architecture], **kwargs})


def set_params(sae, **values):
    with torch.no_grad():
        for name, value in values.items():
            getattr(sae, name).copy_(torch.as_tensor(value, dtype=torch.float32))


# --------------------------------------------------------------------------------------
# Synthetic features
# --------------------------------------------------------------------------------------


def test_feature_probabilities_decay_and_sum_to_mean_active():
    p = feature_probabilities(512, 5.0, 0.99)
    assert p.shape == (512,)
    assert float(p.sum()) == pytest.approx(5.0, rel=1e-5)
    torch.testing.assert_close(p[1:] / p[:-1], torch.full((511,), 0.99))
    with pytest.raises(ValueError, match="lower mean_active"):
        feature_probabilities(4, 5.0)
    with pytest.raises(ValueError, match="decay"):
        feature_probabilities(10, 1.0, 1.5)


def test_synthetic_features_default_setting_and_samples():
    data = SyntheticFeatures(device="cpu", generator=torch.Generator().manual_seed(0))
    assert data.directions.shape == (512, 256)
    torch.testing.assert_close(data.directions.norm(dim=1), torch.ones(512))
    x, c = data.sample(20_000, torch.Generator().manual_seed(1), return_coefficients=True)
    assert x.shape == (20_000, 256) and c.shape == (20_000, 512)
    torch.testing.assert_close(x, c @ data.directions)
    active = c > 0
    assert float(active.sum(dim=1).double().mean()) == pytest.approx(5.0, abs=0.1)
    assert float(c[active].mean()) == pytest.approx(0.5, abs=0.01)  # magnitudes U[0, 1]
    assert c.max() <= 1 and c.min() >= 0
    # The most frequent feature fires with p_0 = 5 / Σ 0.99^i ≈ 0.0503.
    assert float(active[:, 0].double().mean()) == pytest.approx(float(data.feature_probability[0]), abs=0.005)
    again = data.sample(20_000, torch.Generator().manual_seed(1))
    assert torch.equal(x, again)


def test_correlated_features_keep_their_rates_and_fire_together():
    data = SyntheticFeatures(16, 8, mean_active=4.0, decay=1.0, correlation=0.9, group_size=4, device="cpu",
                             generator=torch.Generator().manual_seed(0))
    _, c = data.sample(100_000, torch.Generator().manual_seed(1), return_coefficients=True)
    active = (c > 0).double()
    rates = active.mean(dim=0)
    torch.testing.assert_close(rates, torch.full((16,), 0.25, dtype=torch.float64), atol=0.01, rtol=0)
    both_same_group = float((active[:, 0] * active[:, 1]).mean())
    both_other_group = float((active[:, 0] * active[:, 4]).mean())
    assert both_other_group == pytest.approx(0.25 * 0.25, abs=0.005)  # independent groups
    assert both_same_group > 0.15  # ρ = 0.9: far above 0.0625
    assert float(c[c > 0].mean()) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="correlation"):
        SyntheticFeatures(16, 8, mean_active=2.0, correlation=1.0, device="cpu")


# --------------------------------------------------------------------------------------
# Shapes, validation, the common interface
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_common_interface_shapes(architecture):
    sae = make(architecture)
    x = torch.rand(32, 8)
    x_hat, f = sae(x)
    assert x_hat.shape == (32, 8) and f.shape == (32, 16)
    assert sae.encode(x).shape == (32, 16) and sae.decode(f).shape == (32, 8)
    assert (f >= 0).all()
    out = sae.loss(x)
    for piece in (out.total, out.mse, out.sparsity, out.aux, out.l0):
        assert piece.shape == () and torch.isfinite(piece)
    torch.testing.assert_close(out.total, out.mse + out.sparsity + out.aux)
    assert out.fired.shape == (16,) and out.fired.dtype == torch.bool
    assert out.l0.item() == pytest.approx(float((sae.encode(x) > 0).sum()) / 32)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(16))  # unit-norm at initialisation
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)  # Gao et al.'s transposed initialisation


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="d_in"):
        ReLUSAE(0, 4, device="cpu")
    with pytest.raises(ValueError, match="n_latents"):
        ReLUSAE(4, 2.5, device="cpu")
    with pytest.raises(ValueError, match="l1_coefficient"):
        ReLUSAE(4, 8, l1_coefficient=-1, device="cpu")
    with pytest.raises(ValueError, match="k=9 is more than n_latents=8"):
        TopKSAE(4, 8, k=9, device="cpu")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        BatchTopKSAE(4, 8, k=0, device="cpu")
    with pytest.raises(ValueError, match="threshold_lr"):
        BatchTopKSAE(4, 8, k=2, threshold_lr=0, device="cpu")
    with pytest.raises(ValueError, match="bandwidth"):
        JumpReLUSAE(4, 8, bandwidth=0, device="cpu")
    with pytest.raises(ValueError, match="architecture must be one of"):
        make_sae("vanilla", 4, 8)
    sae = ReLUSAE(4, 8, device="cpu")
    with pytest.raises(ValueError, match=r"\(batch, d_in=4\)"):
        sae(torch.rand(3, 5))
    with pytest.raises(ValueError, match="exactly one of samples"):
        train_sae(sae, torch.rand(10, 4), progress=False)
    with pytest.raises(ValueError, match="exactly one of samples"):
        train_sae(sae, torch.rand(10, 4), samples=10, steps=1, progress=False)
    with pytest.raises(ValueError, match="data must be a"):
        train_sae(sae, torch.rand(10, 3), steps=1, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_sae(sae, torch.rand(10, 4), steps=1, lr=0, progress=False)
    with pytest.raises(ValueError, match="schedule"):
        train_sae(sae, torch.rand(10, 4), steps=1, schedule="warmup", progress=False)
    with pytest.raises(ValueError, match="must return a"):
        train_sae(sae, lambda n, g: torch.rand(n + 1, 4), steps=1, progress=False)
    with pytest.raises(ValueError, match="dead must be"):
        resample_dead_latents(sae, torch.rand(10, 4), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="same d"):
        mmcs(torch.rand(3, 4), torch.rand(3, 5))


# --------------------------------------------------------------------------------------
# The unit-norm decoder
# --------------------------------------------------------------------------------------


def test_decoder_gradient_loses_its_radial_part():
    sae = make("relu")
    sae.loss(torch.rand(64, 8)).total.backward()
    assert (sae.W_dec.grad * sae.W_dec).sum(dim=1).abs().max() > 1e-3
    sae.project_decoder_grad_()
    assert (sae.W_dec.grad * sae.W_dec).sum(dim=1).abs().max() < 1e-6


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_decoder_rows_stay_unit_norm_while_training(architecture, one_thread):
    data = SyntheticFeatures(16, 8, mean_active=3.0, device="cpu", generator=torch.Generator().manual_seed(0))
    sae = make(architecture)
    result = train_sae(sae, data, steps=40, batch_size=256, lr=1e-2, progress=False)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(16))
    assert result.history["mse"][-1] < result.history["mse"][0]  # and it learns
    assert not sae.training  # train_sae leaves the SAE in inference mode


# --------------------------------------------------------------------------------------
# Hand-computed forward passes and gradients
# --------------------------------------------------------------------------------------


def test_relu_sae_loss_by_hand():
    # pre = (x − b_dec) W_enc + b_enc = ([0.5, 0.3] − [0.1, 0]) + [0, −0.1] = [0.4, 0.2]
    sae = ReLUSAE(2, 2, l1_coefficient=0.5, device="cpu")
    set_params(sae, W_enc=torch.eye(2), W_dec=torch.eye(2), b_enc=[0.0, -0.1], b_dec=[0.1, 0.0])
    out = sae.loss(torch.tensor([[0.5, 0.3]]))
    x_hat, f = sae(torch.tensor([[0.5, 0.3]]))
    torch.testing.assert_close(f, torch.tensor([[0.4, 0.2]]))
    torch.testing.assert_close(x_hat, torch.tensor([[0.5, 0.2]]))
    assert out.mse.item() == pytest.approx(0.01, abs=1e-6)  # (0.3 − 0.2)²
    assert out.sparsity.item() == pytest.approx(0.3, abs=1e-6)  # 0.5 · (0.4 + 0.2)
    assert out.l0.item() == 2


def test_relu_sae_gradients_equal_the_plain_formula():
    # The loss is the formula; so are its gradients.
    sae = make("relu")
    set_params(sae, b_dec=torch.rand(8), b_enc=0.1 * torch.randn(16))
    x = torch.rand(64, 8, generator=torch.Generator().manual_seed(1))
    sae.loss(x).total.backward()
    fast = [p.grad.clone() for p in sae.parameters()]
    sae.zero_grad()
    f = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    x_hat = f @ sae.W_dec + sae.b_dec
    ((x - x_hat).square().sum(dim=1).mean() + sae.l1_coefficient * f.abs().sum(dim=1).mean()).backward()
    for got, p in zip(fast, sae.parameters()):
        torch.testing.assert_close(got, p.grad, rtol=1e-5, atol=1e-6)


def test_topk_keeps_exactly_k_per_input():
    sae = make("topk", d_in=8, n_latents=32, k=5)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive, so ReLU removes none of the k
    x = torch.rand(50, 8)
    f = sae.encode(x)
    assert ((f != 0).sum(dim=1) == 5).all()
    pre = sae.pre_activations(x)
    torch.testing.assert_close(f.sort(dim=1, descending=True).values[:, :5], pre.topk(5, dim=1).values)
    # Negative winners are zeroed by the ReLU after TopK.
    with torch.no_grad():
        sae.b_enc.fill_(-10.0)
    assert (sae.encode(x) == 0).all()


@pytest.mark.parametrize("shape", [(64, 32, 8), (64, 512, 8)])  # dense and embedding_bag branches
def test_sparse_decode_equals_the_dense_decoder(shape):
    batch, n, k = shape
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(n, 64, generator=gen)
    values, indices = torch.rand(batch, n, generator=gen).topk(k, dim=1)
    dense = torch.zeros(batch, n).scatter(1, indices, values)
    torch.testing.assert_close(sparse_decode(indices, values, W), dense @ W, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_latents", [32, 512])  # the fast loss decodes densely, then through embedding_bag
def test_topk_loss_matches_encode_decode(n_latents):
    sae = make("topk", d_in=64, n_latents=n_latents, k=8)
    assert sparse_is_faster(8, n_latents, 64) == (n_latents == 512)
    x = torch.rand(40, 64)
    for out in (sae.loss(x), fast_loss(sae, x)):
        torch.testing.assert_close(out.mse, sae.mse(x, sae.decode(sae.encode(x))), rtol=1e-5, atol=1e-6)
        assert torch.equal(out.fired, (sae.encode(x) > 0).any(dim=0))
        assert out.l0.item() == pytest.approx(float((sae.encode(x) > 0).sum()) / 40)


def test_topk_aux_loss_reconstructs_the_error_from_dead_latents():
    sae = make("topk", d_in=4, n_latents=6, k=2, aux_k=2, aux_coefficient=0.5, dead_after=100)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    assert float(sae.loss(x).aux) == 0.0  # nobody is dead yet
    dead = torch.tensor([1, 3, 4])
    sae.samples_since_fired[dead] = 100
    out = sae.loss(x)
    with torch.no_grad():
        pre = sae.pre_activations(x)
        error = x - sae.decode(sae.encode(x))
        values, j = pre[:, dead].topk(2, dim=1)
        error_hat = (values.relu()[:, :, None] * sae.W_dec[dead][j]).sum(dim=1)
        expected = 0.5 * (error - error_hat).square().sum(dim=1).mean()
    torch.testing.assert_close(out.aux, expected)
    torch.testing.assert_close(out.total, out.mse + out.aux)
    # The aux loss trains only the dead latents' encoder columns and decoder rows.
    W_enc_grad, W_dec_grad = torch.autograd.grad(out.aux, [sae.W_enc, sae.W_dec])
    alive = torch.tensor([0, 2, 5])
    assert (W_enc_grad[:, alive] == 0).all() and (W_dec_grad[alive] == 0).all()
    assert W_dec_grad[dead].abs().sum() > 0


def test_batchtopk_keeps_k_times_batch_in_training_and_thresholds_at_inference():
    sae = make("batchtopk", d_in=8, n_latents=32, k=4)
    x = torch.rand(50, 8, generator=torch.Generator().manual_seed(1))
    sae.train()
    f = sae.encode(x).detach()
    assert int((f > 0).sum()) == 4 * 50
    per_input = (f > 0).sum(dim=1)
    assert per_input.min() < 4 < per_input.max()  # a shared budget, not k per input
    a = sae.pre_activations(x).relu().detach()
    assert float(a[f > 0].min()) >= float(a[f == 0].max())  # the 200 largest over the batch
    torch.testing.assert_close(f[f > 0], a[f > 0])  # kept values are not rescaled
    # The loss decodes the same selection; its smallest kept value sets the threshold.
    out = sae.loss(x)
    torch.testing.assert_close(out.mse, sae.mse(x, sae.decode(f)), rtol=1e-5, atol=1e-6)
    assert out.l0.item() == 4.0
    assert out.min_active.item() == pytest.approx(float(f[f > 0].min()))
    sae.update_statistics(out)
    assert float(sae.threshold) == pytest.approx(out.min_active.item())  # the first batch sets θ
    out.min_active = out.min_active + 1.0
    sae.update_statistics(out)  # then an exponential moving average with rate threshold_lr = 0.01
    assert float(sae.threshold) == pytest.approx(out.min_active.item() - 1.0 + 0.01)
    # Inference: one global threshold, no batch dependence.
    sae.eval()
    set_params(sae, threshold=0.3)
    torch.testing.assert_close(sae.encode(x), a * (a > 0.3))
    torch.testing.assert_close(sae.encode(x[:1]), (a * (a > 0.3))[:1])
    mins = []
    for chunk in x.split(25):
        kept = sae.batch_topk(sae.pre_activations(chunk)).detach()
        mins.append(float(kept[kept > 0].min()))
    assert sae.estimate_threshold(x, batch_size=25) == pytest.approx(sum(mins) / 2)


def test_batchtopk_loss_through_embedding_bag_matches_dense():
    sae = make("batchtopk", d_in=64, n_latents=512, k=8)  # 1000·k < n·d: the fast loss's sparse branch
    x = torch.rand(30, 64, generator=torch.Generator().manual_seed(2))
    out = fast_loss(sae, x)
    f = sae.batch_topk(sae.pre_activations(x))
    torch.testing.assert_close(out.mse, sae.mse(x, sae.decode(f)), rtol=1e-5, atol=1e-6)
    assert torch.equal(out.fired, (f > 0).any(dim=0))
    assert out.l0.item() == 8.0


@pytest.mark.parametrize("shape", [(50, 40), (300, 512)])  # small: direct; large: via the subsample
def test_kth_largest_positive_is_exact(shape):
    a = torch.randn(shape, generator=torch.Generator().manual_seed(0)).relu()
    for k in (1, 7, 300, int((a > 0).sum())):
        assert float(kth_largest_positive(a, k)) == float(a.flatten().topk(k).values.min())
    assert float(kth_largest_positive(a, int((a > 0).sum()) + 1)) == 0.0  # fewer positives than k
    with pytest.raises(ValueError, match="k must lie"):
        kth_largest_positive(a, 0)


def test_jumprelu_straight_through_gradients_by_hand():
    # d_in = 2, three latents, θ = 0.5 for all, bandwidth ε = 0.2, λ = 0.1, x = [0.55, 0.45].
    sae = JumpReLUSAE(2, 3, l0_coefficient=0.1, bandwidth=0.2, initial_threshold=0.5, device="cpu")
    set_params(sae, W_enc=[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], b_enc=[0.0, 0.0, 0.0], b_dec=[0.0, 0.0],
               W_dec=[[0.6, 0.8], [0.8, -0.6], [1.0, 0.0]])
    x = torch.tensor([[0.55, 0.45]])
    out = sae.loss(x)
    # pre = [0.55, 0.45, 1.0]; f = [0.55, 0, 1.0] (0.45 is below θ); x̂ = 0.55·[0.6, 0.8] + [1, 0] = [1.33, 0.44]
    torch.testing.assert_close(sae.encode(x), torch.tensor([[0.55, 0.0, 1.0]]))
    assert out.mse.item() == pytest.approx(0.78**2 + 0.01**2, abs=1e-6)
    assert out.sparsity.item() == pytest.approx(0.1 * 2, abs=1e-6)  # L0 = 2
    out.total.backward()
    # ∂L/∂x̂ = 2(x̂ − x) = [1.56, −0.02]; ∂L/∂f = W_dec ∂L/∂x̂ = [0.92, 1.26, 1.56].
    # Pseudo-derivatives, K((pre − θ)/ε) = K([0.25, −0.25, 2.5]) = [1, 1, 0]:
    #   JumpReLU:  −(θ/ε) K ∂L/∂f = −2.5 · [0.92, 1.26, 0] = [−2.3, −3.15, 0]
    #   L0 step:   −(1/ε) K λ     = −5 · 0.1 · [1, 1, 0]  = [−0.5, −0.5, 0]
    # ∂L/∂θ = [−2.8, −3.65, 0], and ∂L/∂log θ = θ ∂L/∂θ = [−1.4, −1.825, 0].
    torch.testing.assert_close(sae.log_threshold.grad, torch.tensor([-1.4, -1.825, 0.0]))
    # ∂L/∂pre = H(pre − θ) ∂L/∂f = [0.92, 0, 1.56] (the step passes no gradient to pre).
    torch.testing.assert_close(sae.b_enc.grad, torch.tensor([0.92, 0.0, 1.56]))
    torch.testing.assert_close(sae.W_enc.grad, torch.tensor([[0.55], [0.45]]) * torch.tensor([[0.92, 0.0, 1.56]]))


def test_jumprelu_and_step_functions_alone():
    z = torch.tensor([[0.1, 0.48, 0.52, 2.0]], requires_grad=True)
    theta = torch.full((4,), 0.5, requires_grad=True)
    y = JumpReLUFunction.apply(z, theta, 0.1)
    torch.testing.assert_close(y, torch.tensor([[0.0, 0.0, 0.52, 2.0]]))
    y.sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    torch.testing.assert_close(theta.grad, torch.tensor([0.0, -5.0, -5.0, 0.0]))  # −(0.5/0.1)·K
    z.grad, theta.grad = None, None
    h = StepFunction.apply(z, theta, 0.1)
    torch.testing.assert_close(h, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    (3 * h).sum().backward()
    assert z.grad is None
    torch.testing.assert_close(theta.grad, torch.tensor([0.0, -30.0, -30.0, 0.0]))  # −(1/0.1)·K·3


def test_gated_forward_and_loss_on_hand_built_weights():
    sae = GatedSAE(2, 2, l1_coefficient=0.1, device="cpu")
    set_params(sae, W_enc=torch.eye(2), b_enc=[0.0, -0.5], r_mag=[math.log(2.0), 0.0], b_mag=[0.0, 0.1],
               W_dec=torch.eye(2), b_dec=[0.0, 0.0])
    x = torch.tensor([[0.3, 0.4], [-0.2, 0.7]])
    pi_gate, pi_mag = sae.gate_and_magnitude(x)
    torch.testing.assert_close(pi_gate, torch.tensor([[0.3, -0.1], [-0.2, 0.2]]))
    torch.testing.assert_close(pi_mag, torch.tensor([[0.6, 0.5], [-0.4, 0.8]]))  # W_mag = W_gate·exp(r_mag)
    torch.testing.assert_close(sae.encode(x), torch.tensor([[0.6, 0.0], [0.0, 0.8]]))
    out = sae.loss(x)
    assert out.mse.item() == pytest.approx((0.25 + 0.05) / 2, abs=1e-6)
    assert out.sparsity.item() == pytest.approx(0.1 * (0.3 + 0.2) / 2, abs=1e-6)  # λ‖ReLU(π_gate)‖₁
    assert out.aux.item() == pytest.approx((0.16 + 0.29) / 2, abs=1e-6)  # ‖x − ReLU(π_gate) W_dec‖²
    assert out.total.item() == pytest.approx(0.4, abs=1e-6)
    # The auxiliary loss reaches the gate path only, through a frozen decoder.
    grads = torch.autograd.grad(out.aux, [sae.W_dec, sae.r_mag, sae.b_enc], allow_unused=True)
    assert grads[0] is None and grads[1] is None and grads[2].abs().sum() > 0
    # The reconstruction trains the magnitudes, not the gate (the Heaviside passes no gradient).
    grads = torch.autograd.grad(out.mse, [sae.b_enc, sae.b_mag], allow_unused=True)
    assert grads[0] is None or (grads[0] == 0).all()
    assert grads[1].abs().sum() > 0


# --------------------------------------------------------------------------------------
# The fast path (course_utils._fast.sae) computes the same losses
# --------------------------------------------------------------------------------------


def trained_a_little(architecture, n_latents):
    """An SAE after 20 steps (non-zero biases, thresholds moved), with three latents marked dead
    so that TopK's and BatchTopK's AuxK term is on."""
    data = SyntheticFeatures(48, 32, mean_active=3.0, device="cpu", generator=torch.Generator().manual_seed(0))
    sae = make(architecture, d_in=32, n_latents=n_latents, seed=1)
    train_sae(sae, data, steps=20, batch_size=256, lr=1e-2, progress=False)
    sae.train()
    if hasattr(sae, "dead_after"):
        sae.samples_since_fired[[0, 5, 9]] = sae.dead_after
    return sae, data.sample(512, torch.Generator().manual_seed(7))


@pytest.mark.parametrize("n_latents", [64, 512])  # TopK and BatchTopK: dense, then sparse decodes
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_fast_loss_equals_the_plain_loss(architecture, n_latents, one_thread):
    sae, x = trained_a_little(architecture, n_latents)
    plain, fast = sae.loss(x), fast_loss(sae, x)
    for piece in ("total", "mse", "sparsity", "aux", "l0"):
        torch.testing.assert_close(getattr(fast, piece), getattr(plain, piece), rtol=1e-5, atol=1e-6)
    if architecture in ("topk", "batchtopk"):
        assert plain.aux > 0
    assert torch.equal(fast.fired, plain.fired)
    if architecture == "batchtopk":
        torch.testing.assert_close(fast.min_active, plain.min_active)
    grads = []
    for out in (plain, fast):
        sae.zero_grad()
        out.total.backward()
        grads.append({name: p.grad.clone() for name, p in sae.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_training_fast_and_plain_end_close(architecture, one_thread):
    data = SyntheticFeatures(48, 32, mean_active=3.0, device="cpu", generator=torch.Generator().manual_seed(0))
    saes, results = [], []
    for fast in (False, True):
        sae = make(architecture, d_in=32, n_latents=128, seed=1, **({"dead_after": 512} if "topk" in architecture
                                                                     else {}))
        results.append(train_sae(sae, data, steps=30, batch_size=512, lr=1e-2, resample_every=10,
                                 resample_inputs=2048, progress=False, fast=fast))
        saes.append(sae)
    assert results[0].resampled == results[1].resampled and results[0].steps == results[1].steps
    for (name, plain), fast in zip(saes[0].state_dict().items(), saes[1].state_dict().values()):
        if plain.is_floating_point():
            torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4, msg=name)
    for name in results[0].history:
        assert results[1].history[name] == pytest.approx(results[0].history[name], rel=1e-4, abs=1e-5)


def test_fast_loss_of_a_subclass_with_its_own_loss_is_that_loss():
    class Halved(ReLUSAE):
        def loss(self, x):
            out = super().loss(x)
            out.total = out.total / 2
            return out

    sae = Halved(8, 16, device="cpu", generator=torch.Generator().manual_seed(0))
    x = torch.rand(32, 8)
    torch.testing.assert_close(fast_loss(sae, x).total, sae.loss(x).total)


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------


def test_resampling_reinitialises_dead_latents_and_resets_adam():
    data = SyntheticFeatures(16, 8, mean_active=3.0, device="cpu", generator=torch.Generator().manual_seed(0))
    sae = make("relu")
    set_params(sae, b_enc=torch.cat([torch.full((4,), -100.0), torch.zeros(12)]))
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        sae.loss(data.sample(128)).total.backward()
        optimizer.step()
    pool = data.sample(2_000, torch.Generator().manual_seed(3))
    assert (sae.encode(pool)[:, :4] == 0).all()
    dead = torch.arange(16) < 4
    alive_norm = float(sae.W_enc.detach()[:, 4:].norm(dim=0).mean())
    W_dec_before = sae.W_dec.detach().clone()
    assert resample_dead_latents(sae, pool, dead, optimizer, torch.Generator().manual_seed(4)) == 4
    # Each new decoder row is a unit-norm input (minus b_dec) from the pool ...
    candidates = torch.nn.functional.normalize(pool - sae.b_dec.detach(), dim=1)
    assert ((sae.W_dec[:4].detach() @ candidates.T).max(dim=1).values > 1 - 1e-5).all()
    # ... the encoder column points the same way, at 0.2 × the living latents' mean norm ...
    torch.testing.assert_close(sae.W_enc[:, :4].detach().T, sae.W_dec[:4].detach() * 0.2 * alive_norm)
    assert (sae.b_enc[:4] == 0).all() and torch.equal(sae.W_dec[4:].detach(), W_dec_before[4:])
    # ... Adam's moments for the resampled slices are zero, the others untouched ...
    for name, dim in sae.latent_dims.items():
        state = optimizer.state[getattr(sae, name)]
        for moment in ("exp_avg", "exp_avg_sq"):
            assert (state[moment].index_select(dim, torch.arange(4)) == 0).all()
            assert state[moment].index_select(dim, torch.arange(4, 16)).abs().sum() > 0
    # ... and the latents fire again.
    assert ((sae.encode(pool)[:, :4] > 0).sum(dim=0) > 0).all()
    assert resample_dead_latents(sae, pool, torch.zeros(16, dtype=torch.bool)) == 0


def test_train_sae_resamples_on_schedule(one_thread):
    data = SyntheticFeatures(16, 8, mean_active=3.0, device="cpu", generator=torch.Generator().manual_seed(0))
    sae = make("relu")
    set_params(sae, b_enc=torch.cat([torch.full((4,), -100.0), torch.zeros(12)]))
    result = train_sae(sae, data, steps=60, batch_size=256, lr=3e-3, resample_every=20, resample_inputs=4096,
                       progress=False)
    assert [step for step, _ in result.resampled] == [20, 40]
    assert result.resampled[0][1] >= 4
    x = data.sample(5_000, torch.Generator().manual_seed(9))
    assert ((sae.encode(x)[:, :4] > 0).sum(dim=0) > 0).all()


# --------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------


def test_train_sae_counts_samples_logs_and_is_seeded(one_thread):
    sizes = []

    def data(batch_size, generator):
        sizes.append(batch_size)
        return torch.rand(batch_size, 8, generator=generator)

    sae = make("relu")
    result = train_sae(sae, data, samples=2_500, batch_size=1_000, log_every=1, progress=False)
    assert sizes == [1_000, 1_000, 500] and result.samples == 2_500
    assert result.steps == [0, 1, 2]
    assert set(result.history) == {"loss", "mse", "sparsity", "aux", "l0"}
    assert all(len(v) == 3 for v in result.history.values())
    assert result.final["loss"] == pytest.approx(result.final["mse"] + result.final["sparsity"])
    x = torch.rand(700, 8, generator=torch.Generator().manual_seed(0))
    runs = []
    for _ in range(2):
        sae = make("topk")
        train_sae(sae, x, steps=10, batch_size=256, seed=3, progress=False)  # 2,560 samples: 4 epochs of x
        runs.append(sae.W_dec.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_train_sae_stops_on_a_diverging_loss():
    def data(batch_size, generator):
        x = torch.rand(batch_size, 8, generator=generator)
        data.calls += 1
        return x * math.inf if data.calls == 3 else x

    data.calls = 0
    with pytest.raises(FloatingPointError, match="NaN or infinite at step 2"):
        train_sae(make("relu"), data, steps=5, batch_size=64, log_every=1, progress=False)


# --------------------------------------------------------------------------------------
# Metrics on hand-built cases
# --------------------------------------------------------------------------------------


def test_mmcs_and_recovery_on_hand_built_dictionaries():
    gen = torch.Generator().manual_seed(0)
    true = torch.nn.functional.normalize(torch.randn(10, 6, generator=gen), dim=1)
    copy = torch.cat([3.0 * true[torch.randperm(10, generator=gen)], torch.randn(5, 6, generator=gen)])
    assert mmcs(true, copy) == pytest.approx(1.0)  # permuted, rescaled, with extra latents
    assert fraction_recovered(true, copy) == 1.0
    assert mmcs(true, -true) < 0.99 and fraction_recovered(true, -true) < 1.0  # signs matter
    diagonal = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(max_cosine_similarity(torch.eye(2), diagonal),
                               torch.full((2,), 1 / math.sqrt(2), dtype=torch.float64))
    assert fraction_recovered(torch.eye(2), diagonal) == 0.0
    assert fraction_recovered(torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == 0.5


def test_variance_explained_l0_dead_dense_and_shrinkage_by_hand():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert fraction_variance_explained(x, x) == 1.0
    assert fraction_variance_explained(x, torch.zeros_like(x)) == 0.0  # predicting the mean
    assert fraction_variance_explained(x, 0.5 * x) == pytest.approx(0.75)  # FVU = 0.5 / 2
    with pytest.raises(ValueError, match="no variance"):
        fraction_variance_explained(torch.ones(3, 2), torch.ones(3, 2))
    latents = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.5, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.2]])
    assert l0(latents) == pytest.approx(7 / 4)
    assert dead_fraction(latents) == 0.25  # latent 1 never fires
    assert dense_fraction(latents, threshold=0.4) == 0.5  # latents 0 (50 %) and 2 (100 %)
    assert dense_fraction(latents, threshold=0.6) == 0.25
    x = torch.rand(100, 5)
    assert shrinkage(x, 0.8 * x) == pytest.approx(0.8)
    assert shrinkage(x, x) == pytest.approx(1.0)


def test_evaluate_a_perfect_hand_built_sae():
    data = SyntheticFeatures(4, 4, mean_active=1.0, decay=1.0, device="cpu")
    data.directions = torch.eye(4)  # x = c, so ReLU with an identity dictionary reconstructs it exactly
    sae = ReLUSAE(4, 5, device="cpu")
    W = torch.cat([torch.eye(4), torch.full((1, 4), 0.5)])
    set_params(sae, W_dec=W, W_enc=W.T, b_enc=[0.0, 0.0, 0.0, 0.0, -10.0], b_dec=torch.zeros(4))
    x, c = data.sample(4_000, torch.Generator().manual_seed(0), return_coefficients=True)
    result = evaluate(sae, x, data.directions, batch_size=1_000)
    assert result["fve"] == pytest.approx(1.0) and result["mse"] == pytest.approx(0.0, abs=1e-10)
    assert result["mmcs"] == pytest.approx(1.0) and result["recovered"] == 1.0
    assert result["shrinkage"] == pytest.approx(1.0)
    assert result["dead"] == 0.2  # the fifth latent never fires
    assert result["l0"] == pytest.approx(float((c > 0).sum(dim=1).double().mean()))
    assert result["dense"] == 0.8  # latents 0-3 fire on 25 % of inputs, more than 10 %


# --------------------------------------------------------------------------------------
# Reproduction: dictionary recovery on synthetic data (Sharkey, Braun & Millidge 2022)
# --------------------------------------------------------------------------------------


# Smaller than the paper's 512 features in 256 dimensions, for speed: 64 features in 32
# dimensions, the same decay 0.99 and 5 active on average; SAEs with 128 latents (2× the true
# number), 1,000 Adam steps of 1,024 fresh inputs, lr 1e-2, on the fast path as chapter 05a.
def recover(architecture, **kwargs):
    data = SyntheticFeatures(64, 32, mean_active=5.0, decay=0.99, device="cpu",
                             generator=torch.Generator().manual_seed(0))
    sae = make_sae(architecture, 32, 128, device="cpu", generator=torch.Generator().manual_seed(100), **kwargs)
    train_sae(sae, data, steps=1_000, batch_size=1_024, lr=1e-2, progress=False, fast=True)
    return evaluate(sae, data.sample(20_000, torch.Generator().manual_seed(5)), data.directions)


def test_l1_sae_recovers_the_true_features(one_thread):
    result = recover("relu", l1_coefficient=0.3)
    assert result["mmcs"] >= 0.99  # measured 0.9937
    assert result["recovered"] == 1.0  # every true feature has a latent at cosine > 0.9
    assert result["dead"] == 0.0
    assert 5.0 < result["l0"] < 12.0  # measured 7.79: the true L0 is 5
    assert result["fve"] > 0.8
    assert result["shrinkage"] < 0.9  # the L1 penalty shrinks activations (measured 0.82)


def test_topk_sae_recovers_the_true_features_without_shrinkage(one_thread):
    result = recover("topk", k=5)
    assert result["mmcs"] >= 0.99  # measured 0.9957
    assert result["recovered"] == 1.0
    assert result["l0"] <= 5.0
    assert result["fve"] > 0.85
    assert result["shrinkage"] == pytest.approx(1.0, abs=0.02)  # TopK does not shrink


# --------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_training_on_cuda(architecture):
    data = SyntheticFeatures(64, 32, device="cuda", generator=torch.Generator().manual_seed(0))
    sae = make_sae(architecture, 32, 128, device="cuda", generator=torch.Generator().manual_seed(1),
                   **({"k": 5} if "topk" in architecture else {}))
    result = train_sae(sae, data, steps=300, batch_size=1024, lr=1e-2, resample_every=100, progress=False)
    assert result.history["mse"][-1] < result.history["mse"][0]
    metrics = evaluate(sae, data.sample(5_000), data.directions)
    assert all(math.isfinite(v) for v in metrics.values())
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(128, device="cuda"))


@pytest.mark.gpu
def test_kth_largest_positive_on_cuda():
    a = torch.randn(1024, 512, device="cuda").relu()
    assert float(kth_largest_positive(a, 8 * 1024)) == float(a.flatten().topk(8 * 1024).values.min())


# --------------------------------------------------------------------------------------
# Chapter 05a's capstone reference: the one-screen SAE and loop take the library's steps
# --------------------------------------------------------------------------------------


def test_the_plain_sae_and_loop_take_the_steps_of_relu_sae_and_train_sae():
    data = sae.SyntheticFeatures(16, 8, mean_active=3.0, device="cpu", generator=torch.Generator().manual_seed(0))
    plain = sae.SparseAutoencoder(8, 24, 0.3, generator=torch.Generator().manual_seed(4))
    module = sae.ReLUSAE(8, 24, 0.3, device="cpu", generator=torch.Generator().manual_seed(4))
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(plain, name), getattr(module, name))
    losses = sae.train_sparse_autoencoder(plain, data, steps=50, batch_size=64, lr=1e-2, seed=3, progress=False)
    run = sae.train_sae(module, data, steps=50, batch_size=64, lr=1e-2, seed=3, progress=False, log_every=1)
    assert losses.shape == (50,)
    torch.testing.assert_close(losses, torch.tensor(run.history["loss"], dtype=torch.float32), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain.W_dec.detach(), module.W_dec.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain.W_dec.norm(dim=1), torch.ones(24))


def test_the_plain_functions_compute_what_the_modules_compute():
    gen = torch.Generator().manual_seed(1)
    module = sae.ReLUSAE(6, 10, 0.5, device="cpu", generator=gen)
    with torch.no_grad():
        module.b_enc.normal_(generator=gen), module.b_dec.normal_(generator=gen)
    x = torch.randn(32, 6, generator=gen)
    f = sae.sae_encode(x, module.W_enc, module.b_enc, module.b_dec)
    torch.testing.assert_close(f, module.encode(x))
    torch.testing.assert_close(sae.sae_decode(f, module.W_dec, module.b_dec), module.decode(f))
    torch.testing.assert_close(sae.l1_sae_loss(x, module.decode(f), f, 0.5), module.loss(x).total)
    pre = torch.randn(5, 10, generator=gen)
    torch.testing.assert_close(sae.topk_activation(pre, 3), sae.TopKSAE(6, 10, 3, device="cpu").activation(pre))


def test_resample_latents_revives_dead_latents_toward_badly_reconstructed_inputs():
    model = sae.SparseAutoencoder(4, 12, 0.3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.b_enc[:5] = -100.0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    inputs = torch.randn(500, 4, generator=torch.Generator().manual_seed(1))
    count = sae.resample_latents(model, optimizer, inputs, torch.Generator().manual_seed(2))
    assert count == 5
    assert (model.b_enc[:5] == 0).all() and (model.b_enc[5:] == 0).all()
    torch.testing.assert_close(model.W_dec.norm(dim=1), torch.ones(12))
    with torch.no_grad():
        assert ((model.encode(inputs) > 0).any(dim=0)).all()  # nothing dead now
