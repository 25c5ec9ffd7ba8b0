"""A small GPT that ships with the course, how it is trained and stored, and the helpers
chapter 05 uses to study sparse autoencoders on its residual stream.  The language it is
trained on (vocabulary, grammar, corpus, concept labels, n-gram baselines) is
``course_utils.language``; matching SAE latents across two of these models (Lan et al. 2024)
is ``course_utils.universality``.

The model (``GPTConfig``, ``GPT``)
----------------------------------
GPT-2 in plain PyTorch (row-vector convention, residual stream x is (batch, pos, d_model)):
token + learned positional embedding; n_layers pre-LayerNorm blocks, each
x = x + Attn(LN(x)), x = x + MLP(LN(x)) with causal multi-head attention and a 4× MLP with
GELU (tanh approximation, as GPT-2); a final LayerNorm; logits through the transposed token
embedding (tied unembedding, as GPT-2).  Hook points carry TransformerLens' names, so SAELens
configurations read the same:

    hook_embed, hook_pos_embed
    blocks.{i}.hook_resid_pre      the residual stream entering block i        (batch, pos, d_model)
    blocks.{i}.attn.hook_pattern   attention probabilities            (batch, heads, query, key)
    blocks.{i}.hook_attn_out       the attention output added to the stream    (batch, pos, d_model)
    blocks.{i}.hook_resid_mid      the stream between attention and MLP        (batch, pos, d_model)
    blocks.{i}.mlp.hook_post       the MLP neurons after GELU                  (batch, pos, 4 d_model)
    blocks.{i}.hook_mlp_out        the MLP output added to the stream          (batch, pos, d_model)
    blocks.{i}.hook_resid_post     the stream leaving block i                  (batch, pos, d_model)

``model(tokens)`` gives logits; ``model.run_with_cache(tokens, names)`` also returns the named
activations (and stops after the last block it needs); ``model.run_with_hooks(tokens,
hooks={name: fn})`` replaces an activation by ``fn(activation)`` (None keeps it).

Training and checkpoints
------------------------
``train_lm`` (AdamW, linear warmup then cosine decay, gradient clipping; the progress bar,
loss history and NaN check are ``training.TrainingLoop``'s) and ``evaluate_lm`` (mean
cross-entropy in nats per predicted token).
``scripts/train_lm.py`` trains the shipped checkpoints with ``TRAINING_SETTINGS`` and writes
``course_utils/data/lm_seed0.safetensors`` and ``lm_seed1.safetensors`` (two initialisation
seeds, for universality experiments); the configuration, vocabulary, settings and losses sit in
the safetensors metadata.  ``load_lm(name)`` / ``save_lm``.

Analysis helpers (chapter 05b)
------------------------------
``collect_activations`` (chunked, no grad), ``precision_recall`` (one concept, every latent),
``ce_loss_recovered`` (splice a reconstruction,
e.g. an SAE's, into the forward pass), ``max_activating_examples`` and ``concept_scores``
(for each concept the latent that detects it best, by F1).  Splicing with PyTorch forward
hooks, both ablation baselines, steering and ablating one latent: ``course_utils.interventions``.

Real GPT-2 (optional): ``gpt2_config_from_hf``, ``load_gpt2_state_dict`` convert a Hugging Face
``GPT2LMHeadModel`` state dict; ``load_pretrained_gpt2`` downloads one through ``transformers``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import get_device
from .language import Corpus, Vocab, _positive_int
from .training import TrainingLoop

DATA_DIR = Path(__file__).resolve().parent / "data"
FORMAT_VERSION = "1"


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


@dataclass
class GPTConfig:
    """Sizes of a GPT-2-style model.  d_head = d_model / n_heads; the MLP has d_mlp = mlp_ratio ×
    d_model (GPT-2's 4 by default; chapter 06's superposed fact model narrows it)."""

    vocab_size: int
    n_ctx: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    layer_norm_eps: float = 1e-5
    mlp_ratio: int = 4

    def __post_init__(self):
        for name in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            _positive_int(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_mlp(self) -> int:
        return self.mlp_ratio * self.d_model


class HookPoint(nn.Module):
    """An identity that a hook can read or replace; its module name is the hook's name."""

    def __init__(self):
        super().__init__()
        self.fn: Callable[[Tensor], Tensor | None] | None = None
        self.name = ""

    def forward(self, x: Tensor) -> Tensor:
        if self.fn is None:
            return x
        out = self.fn(x)
        if out is None:
            return x
        if not isinstance(out, Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"hook {self.name!r} must return None or a tensor of shape {tuple(x.shape)}, got {shape}")
        return out


class _StopForward(Exception):
    pass


class Attention(nn.Module):
    """Causal multi-head self-attention: softmax(q kᵀ / √d_head + causal mask) v, heads
    concatenated and projected.  ``c_attn`` computes q, k, v at once (GPT-2's layout)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.hook_pattern = HookPoint()
        self.register_buffer("mask", torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool).tril(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)
        q, k, v = (y.view(B, T, self.n_heads, self.d_head).transpose(1, 2) for y in (q, k, v))  # (B, H, T, d_head)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        pattern = self.hook_pattern(scores.softmax(dim=-1))               # (B, H, query, key)
        z = (pattern @ v).transpose(1, 2).reshape(B, T, D)
        return self.c_proj(z)


class MLP(nn.Module):
    """x -> GELU_tanh(x W_in + b_in) W_out + b_out, hidden width 4 d_model."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.c_proj = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.hook_post(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: resid_mid = resid_pre + attn(LN1(resid_pre)),
    resid_post = resid_mid + mlp(LN2(resid_mid))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)
        for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"):
            setattr(self, name, HookPoint())

    def forward(self, x: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln_1(x))))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln_2(x))))


class GPT(nn.Module):
    """GPT-2 architecture, small.  ``model(tokens)`` -> logits (batch, pos, vocab_size).

    tokens: (batch, pos) or (pos,) integer ids with pos ≤ n_ctx.  Parameters follow GPT-2's
    names (``wte``, ``wpe``, ``blocks.{i}.ln_1`` …, ``ln_f``) and initialisation (normal(0,
    0.02), output projections scaled by 1/√(2 n_layers)); the unembedding is ``wte.weight``ᵀ.
    ``seed`` fixes the initialisation.
    """

    def __init__(self, cfg: GPTConfig, seed: int | None = 0, device=None):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
        self._hook_points = {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}
        self.reset_parameters(seed)
        self.to(get_device(device) if not isinstance(device, torch.device) else device)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = 0) -> None:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("ln_"):
                p.fill_(1.0)
            else:
                std = 0.02 / math.sqrt(2 * self.cfg.n_layers) if name.endswith("c_proj.weight") else 0.02
                p.copy_(torch.randn(p.shape, generator=generator) * std)

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    def hook_names(self) -> list[str]:
        """Every hook point's name, in forward order."""
        return list(self._hook_points)

    def _check_tokens(self, tokens) -> Tensor:
        tokens = torch.as_tensor(tokens)
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
            raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        if tokens.dim() not in (1, 2):
            raise ValueError(f"tokens must be (batch, pos) or (pos,), got shape {tuple(tokens.shape)}")
        T = tokens.shape[-1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds the model's context of {self.cfg.n_ctx} tokens")
        if T == 0:
            raise ValueError("tokens must hold at least one position")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size}), got values in [{lo}, {hi}]")
        return tokens.to(self.device)

    def forward(self, tokens: Tensor, stop_at_layer: int | None = None) -> Tensor:
        """Logits (batch, pos, vocab_size); with ``stop_at_layer=k`` the residual stream after
        block k−1 (before ``ln_f``), (batch, pos, d_model), without running the rest."""
        tokens = self._check_tokens(tokens)
        squeeze = tokens.dim() == 1
        if squeeze:
            tokens = tokens[None]
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.hook_embed(self.wte(tokens)) + self.hook_pos_embed(self.wpe(positions))[None]
        for i, block in enumerate(self.blocks):
            if stop_at_layer is not None and i >= stop_at_layer:
                break
            x = block(x)
        if stop_at_layer is None:
            x = self.ln_f(x) @ self.wte.weight.T
        return x[0] if squeeze else x

    def _check_names(self, names) -> list[str]:
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in self._hook_points]
        if unknown:
            raise ValueError(f"unknown hook name(s) {unknown}; the hook names are {self.hook_names()}")
        return names

    def _layer_of(self, name: str) -> int:
        """The number of blocks that must run to reach hook ``name``."""
        return int(name.split(".")[1]) + 1 if name.startswith("blocks.") else 0

    def run_with_cache(self, tokens: Tensor, names=None, stop_early: bool = True) -> tuple[Tensor | None, dict[str, Tensor]]:
        """(logits, {name: activation}) for the hooks in ``names`` (default: all of them).

        Activations are stored detached.  With ``stop_early`` and only some hooks asked for,
        the forward pass stops right after the last of them and the logits are None.
        """
        names = self.hook_names() if names is None else self._check_names(names)
        cache: dict[str, Tensor] = {}
        order = self.hook_names()
        last = max(names, key=order.index) if names else None

        def store(name):
            def fn(x):
                cache[name] = x.detach()
                if stop_early and name == last and len(names) < len(order):
                    raise _StopForward
            return fn

        logits = None
        try:
            self._set_hooks({n: store(n) for n in names})
            logits = self(tokens)
        except _StopForward:
            pass
        finally:
            self._set_hooks({})
        return logits, cache

    def run_with_hooks(self, tokens: Tensor, hooks: dict[str, Callable[[Tensor], Tensor | None]]) -> Tensor:
        """Logits with each hook's activation replaced by ``fn(activation)`` (None keeps it)."""
        self._check_names(list(hooks))
        try:
            self._set_hooks(hooks)
            return self(tokens)
        finally:
            self._set_hooks({})

    def _set_hooks(self, hooks: dict) -> None:
        for name, point in self._hook_points.items():
            point.fn = hooks.get(name)


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------

TRAINING_SETTINGS = dict(
    n_train=12_000, n_val=2_000, corpus_seed=0, val_seed=10_001, ctx=64,
    d_model=64, n_layers=2, n_heads=4,
    steps=1_200, batch_size=32, lr=3e-3, warmup=100, weight_decay=0.1, min_lr_ratio=0.1,
)
"""The shipped checkpoints' recipe (``scripts/train_lm.py``); the model seed is 0 or 1."""


@dataclass
class LMTrainResult:
    """What ``train_lm`` returns: the training loss (nats/token) at each logged step."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _as_tokens(data) -> Tensor:
    tokens = data.tokens if isinstance(data, Corpus) else torch.as_tensor(data)
    if tokens.dim() != 2 or tokens.dtype.is_floating_point:
        raise ValueError(f"training data must be a Corpus or (n_seq, ctx) integer tokens, got shape "
                         f"{tuple(tokens.shape)} and dtype {tokens.dtype}")
    return tokens


def lm_loss(model: GPT, tokens: Tensor) -> Tensor:
    """Mean next-token cross-entropy over positions 1 … ctx−1 of each row (nats/token)."""
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1).to(logits.device))


def train_lm(model: GPT, data, steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
             warmup: int = 100, weight_decay: float = 0.1, min_lr_ratio: float = 0.1, grad_clip: float = 1.0,
             log_every: int | None = None, progress: bool = True, description: str = "GPT",
             loss=None) -> LMTrainResult:
    """Train ``model`` on next-token prediction over rows of ``data`` (a ``Corpus`` or
    (n_seq, ctx) tokens).  ``loss(model, batch) -> scalar`` replaces ``lm_loss`` (e.g.
    ``facts.answer_loss``, the loss on answer words only).

    AdamW (betas 0.9, 0.95; weight decay on matrices only), learning rate rising linearly for
    ``warmup`` steps then falling by a cosine to ``min_lr_ratio × lr``; gradients clipped to
    norm ``grad_clip``.  Each step draws ``batch_size`` rows (a shuffled pass over the data,
    reshuffled each epoch; ``seed`` fixes the order).  The loss is logged every ``log_every``
    steps (default: 100 records); a NaN or infinite loss raises ``FloatingPointError``.
    The model is left in eval mode.
    """
    tokens = _as_tokens(data)
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    warmup = int(warmup)
    log_every = _positive_int("log_every", log_every or max(1, steps // 100))
    loss_fn = lm_loss if loss is None else loss
    if not callable(loss_fn):
        raise TypeError(f"loss must be a function (model, batch) -> scalar, got {type(loss).__name__}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)],
                                  lr=lr, betas=(0.9, 0.95), foreach=True)
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(len(tokens), generator=generator), 0
    tokens = tokens.to(model.device)
    loop = TrainingLoop(steps, description=description, progress=progress, log_every=log_every,
                        what="the language-model loss")
    model.train()
    for step in loop:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(tokens), generator=generator), 0
        batch = tokens[order[cursor:cursor + batch_size].to(tokens.device)]
        cursor += batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr * _lr_multiplier(step, steps, warmup, min_lr_ratio)
        loss_value = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if loop.logging(step):
            loop.log(step, float(loss_value.detach()))
    model.eval()
    return LMTrainResult(steps=loop.steps_logged, loss=loop.history["loss"], seconds=loop.seconds)


def _lr_multiplier(step: int, steps: int, warmup: int, min_lr_ratio: float) -> float:
    """The learning-rate schedule as a fraction of the peak rate: (step + 1) / warmup for the
    first ``warmup`` steps, then a half cosine from 1 down towards ``min_lr_ratio``, which it
    would reach at step ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate_lm(model: GPT, tokens, batch_size: int = 256) -> float:
    """Mean next-token cross-entropy (nats per predicted token) over (n_seq, ctx) tokens."""
    tokens = _as_tokens(tokens)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i:i + batch_size]
        n = batch[:, 1:].numel()
        total += float(lm_loss(model, batch)) * n
        count += n
    model.train(was_training)
    return total / count


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def save_lm(model: GPT, vocab: Vocab, path, metadata: dict | None = None) -> Path:
    """Write the weights (float32) to a safetensors file, with the config, the vocabulary and
    ``metadata`` (JSON-serialisable values) in its header.  Returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    if len(vocab) != model.cfg.vocab_size:
        raise ValueError(f"the vocabulary has {len(vocab)} words but the model's vocab_size is {model.cfg.vocab_size}")
    header = {"format": "course_utils.lm", "format_version": FORMAT_VERSION,
              "config": json.dumps(asdict(model.cfg)), "vocab": json.dumps(vocab.words)}
    for key, value in (metadata or {}).items():
        header[key] = json.dumps(value)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=header)
    return path


def read_lm_metadata(path) -> dict:
    """The header of a checkpoint written by ``save_lm`` (a path, or a shipped name such as
    ``"seed0"``): config, vocab and the extra metadata, JSON-decoded."""
    from safetensors import safe_open

    path = _resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"no language-model checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); "
                         "regenerate it with scripts/train_lm.py") from None
    if header.get("format") != "course_utils.lm":
        raise ValueError(f"{path} is a safetensors file but not a course_utils.lm checkpoint (no 'format' entry)")
    try:
        return {k: (v if k in ("format", "format_version") else json.loads(v)) for k, v in header.items()}
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the checkpoint's metadata is not valid JSON ({error})") from None


def _resolve(name_or_path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists() or len(path.parts) > 1:
        return path
    return DATA_DIR / f"lm_{name_or_path}.safetensors"


def load_lm(name="seed0", device=None) -> tuple[GPT, Vocab]:
    """(model, vocab) from a shipped checkpoint (``"seed0"``, ``"seed1"``) or a path.

    A missing file, a file that is not a checkpoint, and weights that do not match the
    recorded configuration each raise an error naming the file and the problem.  The
    model is in eval mode on ``device`` (default ``get_device()``).
    """
    from safetensors.torch import load_file

    path = _resolve(name)
    if not path.is_file():
        shipped = sorted(p.stem.removeprefix("lm_") for p in DATA_DIR.glob("lm_*.safetensors"))
        raise FileNotFoundError(f"no language-model checkpoint at {path} (shipped: {shipped}); "
                                "scripts/train_lm.py writes them")
    meta = read_lm_metadata(path)
    try:
        cfg = GPTConfig(**meta["config"])
        vocab = Vocab(meta["vocab"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: bad config or vocabulary in the checkpoint metadata ({error})") from None
    if len(vocab) != cfg.vocab_size:
        raise ValueError(f"{path}: the vocabulary has {len(vocab)} words but the config says vocab_size={cfg.vocab_size}")
    state = load_file(str(path))
    model = GPT(cfg, seed=None, device="cpu")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        shapes = [f"{k}: {found[k]} vs {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
        raise ValueError(f"{path}: weights do not match the config {asdict(cfg)} "
                         f"(missing {missing[:5]}, unexpected {extra[:5]}, wrong shapes {shapes[:5]})")
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: non-finite values in {bad[:5]}")
    model.load_state_dict(state)
    model.to(get_device(device) if not isinstance(device, torch.device) else device)
    return model.eval(), vocab


# --------------------------------------------------------------------------------------
# Analysis helpers (chapter 05b)
# --------------------------------------------------------------------------------------


@torch.no_grad()
def collect_activations(model: GPT, tokens: Tensor, hook_name: str, batch_size: int = 256,
                        exclude_bos: bool = False) -> Tensor:
    """Activations at ``hook_name`` for every position, (n_seq · ctx, d) float32 on the CPU,
    row-major (sequence, then position: row s·ctx + p), so they line up with
    ``corpus.labels.reshape(-1, n_concepts)``.  With ``exclude_bos`` position 0 is dropped
    (rows s·(ctx−1) + p − 1; use ``labels[:, 1:]``).  Runs in chunks of ``batch_size`` rows and
    stops after the block that holds the hook.
    """
    model._check_names([hook_name])
    tokens = _as_tokens(tokens)
    chunks = []
    for i in range(0, len(tokens), _positive_int("batch_size", batch_size)):
        _, cache = model.run_with_cache(tokens[i:i + batch_size], [hook_name])
        acts = cache[hook_name]
        if acts.dim() != 3:
            raise ValueError(f"hook {hook_name!r} is not a per-position activation (shape {tuple(acts.shape)})")
        if exclude_bos:
            acts = acts[:, 1:]
        chunks.append(acts.reshape(-1, acts.shape[-1]).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def ce_loss_recovered(model: GPT, tokens: Tensor, hook_name: str, reconstruct: Callable[[Tensor], Tensor],
                      batch_size: int = 256) -> dict[str, float]:
    """How much of the language-model loss survives replacing the activation at ``hook_name``
    by ``reconstruct(acts)`` (e.g. an SAE's forward pass).

    ``reconstruct`` maps (n, d) to (n, d).  It is applied at every position except BOS
    (position 0), which keeps its clean activation in all three runs: an SAE is trained
    without the BOS position (an outlier norm that every sequence shares), and the BOS
    activation carries no information about the text.  Losses are mean next-token
    cross-entropies over positions 1 … ctx−1.  Returns dict(clean, spliced, zero_ablated,
    recovered = (zero_ablated − spliced) / (zero_ablated − clean)): 1 when the
    reconstruction is perfect, 0 when it is as bad as zeroing the activation.
    """
    model._check_names([hook_name])
    tokens = _as_tokens(tokens)

    def splice(fn):
        def hook(x):
            rest = x[:, 1:]
            new = fn(rest.reshape(-1, x.shape[-1])).reshape(rest.shape).to(x.dtype)
            return torch.cat([x[:, :1], new], dim=1)
        return hook

    def loss(hooks):
        total, count = 0.0, 0
        for i in range(0, len(tokens), batch_size):
            batch = tokens[i:i + batch_size].to(model.device)
            logits = model.run_with_hooks(batch[:, :-1], hooks)
            n = batch[:, 1:].numel()
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))) * n
            count += n
        return total / count

    def checked(acts):
        out = reconstruct(acts)
        if not isinstance(out, Tensor) or out.shape != acts.shape:
            raise ValueError(f"reconstruct must map (n, d) = {tuple(acts.shape)} to the same shape, got "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        return out

    was_training = model.training
    model.eval()
    clean = loss({})
    spliced = loss({hook_name: splice(checked)})
    zero = loss({hook_name: splice(torch.zeros_like)})
    model.train(was_training)
    denominator = zero - clean
    return dict(clean=clean, spliced=spliced, zero_ablated=zero,
                recovered=(zero - spliced) / denominator if denominator != 0 else float("nan"))


def max_activating_examples(latent_acts: Tensor, k: int = 10, window: int = 5,
                            tokens: Tensor | None = None, vocab: Vocab | None = None) -> dict:
    """The ``k`` (sequence, position) pairs where a latent fires most strongly.

    latent_acts: (n_seq, ctx), one latent's activation at every position.  Returns
    dict(indices (k, 2) long of (seq, position), values (k,), windows (k, 2·window+1) of token
    ids centred on the position, padded with −1 outside the sequence; with ``vocab`` also
    ``texts``, the windows decoded with the top token in [brackets]).  ``tokens`` (n_seq, ctx)
    is needed for windows.  Ties are broken by the earlier (seq, position).
    """
    if latent_acts.dim() != 2:
        raise ValueError(f"latent_acts must be (n_seq, ctx), got shape {tuple(latent_acts.shape)}")
    k = min(_positive_int("k", k), latent_acts.numel())
    n_seq, ctx = latent_acts.shape
    flat = latent_acts.reshape(-1).float().cpu()
    # stable sort so ties keep their (seq, position) order
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    indices = torch.stack([order // ctx, order % ctx], dim=1)
    out = dict(indices=indices, values=flat[order])
    if tokens is not None:
        if tuple(tokens.shape) != (n_seq, ctx):
            raise ValueError(f"tokens must have the shape of latent_acts {(n_seq, ctx)}, got {tuple(tokens.shape)}")
        offsets = torch.arange(-window, window + 1)
        pos = indices[:, 1:2] + offsets                                    # (k, 2·window+1)
        valid = (pos >= 0) & (pos < ctx)
        windows = tokens.cpu()[indices[:, :1], pos.clamp(0, ctx - 1)]
        out["windows"] = torch.where(valid, windows, torch.full_like(windows, -1))
        if vocab is not None:
            out["texts"] = [" ".join(("[" + vocab.words[t] + "]") if j == window else vocab.words[t]
                                     for j, t in enumerate(row) if t >= 0) for row in out["windows"].tolist()]
    return out


def precision_recall(fires: Tensor, concept: Tensor) -> tuple[Tensor, Tensor]:
    """Every latent's precision and recall as a detector of one concept (float64).

    fires: (n_tokens, n_latents) bool, where each latent fires; concept: (n_tokens,) bool,
    which tokens have the concept.  precision = |fires ∧ concept| / |fires| (0 for a latent
    that never fires), recall = |fires ∧ concept| / |concept|; each (n_latents,).
    """
    f, c = fires.double(), concept.double().to(fires.device)
    hits = c @ f                                                    # (n_latents,)
    return hits / f.sum(dim=0).clamp_min(1), hits / c.sum()


def concept_scores(latent_acts: Tensor, labels: Tensor, threshold: float = 0.0,
                   concepts: tuple[str, ...] | None = None) -> list[dict]:
    """For each concept, the latent whose firing best matches it, by F1.

    latent_acts: (n_tokens, n_latents); labels: (n_tokens, n_concepts) bool.  A latent fires
    where its activation > ``threshold``.  precision = |fires ∧ concept| / |fires|, recall =
    |fires ∧ concept| / |concept|, F1 their harmonic mean (0 where undefined).  Returns one
    dict per concept: concept (name or index), latent, f1, precision, recall, support (the
    number of tokens with the concept).  Ties go to the lowest latent index.
    """
    if latent_acts.dim() != 2 or labels.dim() != 2 or latent_acts.shape[0] != labels.shape[0]:
        raise ValueError(f"latent_acts (n_tokens, n_latents) and labels (n_tokens, n_concepts) must share n_tokens; "
                         f"got {tuple(latent_acts.shape)} and {tuple(labels.shape)}")
    fires = (latent_acts > threshold).double()                      # (n, L)
    truth = labels.to(torch.float64).to(fires.device)               # (n, C)
    hits = truth.T @ fires                                          # (C, L)
    n_fire = fires.sum(0)[None, :]
    n_true = truth.sum(0)[:, None]
    precision = torch.where(n_fire > 0, hits / n_fire.clamp_min(1), torch.zeros_like(hits))
    recall = torch.where(n_true > 0, hits / n_true.clamp_min(1), torch.zeros_like(hits))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-300),
                     torch.zeros_like(hits))
    best = f1.argmax(dim=1)
    names = concepts if concepts is not None else list(range(labels.shape[1]))
    if len(names) != labels.shape[1]:
        raise ValueError(f"{len(names)} concept names for {labels.shape[1]} label columns")
    return [dict(concept=names[c], latent=int(best[c]), f1=float(f1[c, best[c]]),
                 precision=float(precision[c, best[c]]), recall=float(recall[c, best[c]]),
                 support=int(n_true[c, 0])) for c in range(labels.shape[1])]


# --------------------------------------------------------------------------------------
# Optional: real GPT-2 weights
# --------------------------------------------------------------------------------------


def gpt2_config_from_hf(hf_config: dict) -> GPTConfig:
    """A ``GPTConfig`` from a Hugging Face GPT-2 config (its ``to_dict()`` or config.json)."""
    try:
        n_embd = hf_config["n_embd"]
        cfg = GPTConfig(vocab_size=hf_config["vocab_size"], n_ctx=hf_config.get("n_positions", hf_config.get("n_ctx")),
                        d_model=n_embd, n_layers=hf_config["n_layer"], n_heads=hf_config["n_head"],
                        layer_norm_eps=hf_config.get("layer_norm_epsilon", 1e-5))
    except KeyError as error:
        raise ValueError(f"the GPT-2 config lacks {error}") from None
    inner = hf_config.get("n_inner")
    if inner not in (None, 4 * n_embd):
        raise ValueError(f"n_inner={inner} is not supported (the MLP here is 4 × n_embd = {4 * n_embd})")
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function={activation!r} is not supported (GPT-2 uses 'gelu_new', the tanh GELU)")
    return cfg


def load_gpt2_state_dict(state_dict: dict[str, Tensor], cfg: GPTConfig, device=None) -> GPT:
    """A ``GPT`` holding Hugging Face ``GPT2LMHeadModel`` (or ``GPT2Model``) weights.

    HF names: ``transformer.wte/wpe``, ``transformer.h.{i}.ln_1``, ``attn.c_attn``,
    ``attn.c_proj``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``, ``transformer.ln_f``.  HF's
    ``Conv1D`` stores weights as (in, out) for x @ W; ``nn.Linear`` stores (out, in), so those
    are transposed.  ``attn.bias``/``attn.masked_bias`` (mask buffers) and ``lm_head.weight``
    (tied to wte) are skipped.
    """
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    model = GPT(cfg, seed=None, device="cpu")
    ours = {}
    for key, value in sd.items():
        if key == "lm_head.weight" or key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        target = key.replace("h.", "blocks.", 1) if key.startswith("h.") else key
        conv1d = key.endswith(".weight") and any(s in key for s in ("c_attn", "c_proj", "c_fc"))
        ours[target] = value.T.contiguous() if conv1d else value
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    shapes = [f"{k}: {tuple(ours[k].shape)} vs {tuple(expected[k].shape)}"
              for k in expected if k in ours and ours[k].shape != expected[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"the GPT-2 state dict does not match {asdict(cfg)}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}, wrong shapes {shapes[:5]}")
    if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["wte.weight"]):
        raise ValueError("lm_head.weight differs from wte.weight; only tied unembeddings (as GPT-2) are supported")
    model.load_state_dict({k: v.float() for k, v in ours.items()})
    model.to(get_device(device) if not isinstance(device, torch.device) else device)
    return model.eval()


def load_pretrained_gpt2(name: str = "gpt2", device=None) -> GPT:
    """GPT-2 from the Hugging Face hub (needs ``transformers`` and a network connection); its
    tokenizer is ``transformers.AutoTokenizer.from_pretrained(name)``."""
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        raise ImportError("load_pretrained_gpt2 needs the 'transformers' package (pip install transformers); "
                          "the course's own model needs nothing: load_lm()") from None
    hf = GPT2LMHeadModel.from_pretrained(name)
    return load_gpt2_state_dict(hf.state_dict(), gpt2_config_from_hf(hf.config.to_dict()), device=device)
