"""Saving and loading SAEs in SAELens's on-disk format: ``save_sae`` and ``load_sae``.

An SAE is saved as a directory holding two files, the layout SAELens (Bloom et al.) reads
with ``SAE.load_from_disk(path)``:

    cfg.json                   the config: architecture, d_in, d_sae, dtype, device,
                               apply_b_dec_to_input, normalize_activations, metadata{...}
    sae_weights.safetensors    the tensors, named as SAELens names them

    ours        SAELens architecture   tensors
    ReLUSAE     "standard"             W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in), b_dec (d_in,)
    TopKSAE     "topk" (cfg k)         the same
    BatchTopK   "jumprelu"             the same + threshold (d_sae,) = θ in every entry (SAELens
                                       saves its own trained BatchTopK SAEs this way too)
    JumpReLU    "jumprelu"             the same + threshold = exp(log_threshold)
    GatedSAE    "gated"                W_enc (the gate's), b_gate (our b_enc), r_mag, b_mag, W_dec, b_dec

SAELens computes pre = (x − b_dec·[apply_b_dec_to_input]) W_enc + b_enc, as ours does with
apply_b_dec_to_input = true, which is what we write.  The course's own settings (our
architecture, l1_coefficient, k, aux_k, bandwidth, …) go in cfg.json's metadata under
"superposition_course", where SAELens keeps but ignores them, so load_sae rebuilds an equal
object.  Top-level keys of SAELens v5 (activation_fn_str, hook_layer, context_size, …) are
written too, so v5 can read the file; v6 ignores them.  Checked with SAELens 6.54.12 and
5.11.0: both load all five, with the same activations and reconstructions to 1e-6.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .device import get_device
from .sae import ARCHITECTURES, SAE, make_sae

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
SAELENS_ARCHITECTURES = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu",
                         "gated": "gated"}
# The format version we follow: SAELens ≥ 6 reads a config with this version as its own format.
SAELENS_FORMAT_VERSION = "6.0.0"
_COURSE_KEY = "superposition_course"
_RESERVED_METADATA = {"sae_lens_version", "sae_lens_training_version", "training_architecture", _COURSE_KEY}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _architecture_name(sae: SAE) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(sae) is cls:
            return name
    raise TypeError(f"save_sae saves the course's SAEs ({', '.join(c.__name__ for c in ARCHITECTURES.values())}), "
                    f"got {type(sae).__name__}")


def _settings(sae: SAE) -> dict:
    """The constructor arguments that rebuild ``sae`` (besides d_in, n_latents, device, generator)."""
    import inspect

    names = [p for p in inspect.signature(type(sae).__init__).parameters
             if p not in ("self", "d_in", "n_latents", "device", "generator")]
    return {name: getattr(sae, name) for name in names}


def _saelens_tensors(sae: SAE, architecture: str) -> dict[str, Tensor]:
    """The SAE's weights under SAELens's names (CPU, contiguous, detached copies)."""
    t = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if architecture == "gated":
        t.update(b_gate=sae.b_enc, r_mag=sae.r_mag, b_mag=sae.b_mag)
    else:
        t["b_enc"] = sae.b_enc
    if architecture == "jumprelu":
        t["threshold"] = sae.threshold
    elif architecture == "batchtopk":
        t["threshold"] = sae.threshold.expand(sae.n_latents)
    return {name: value.detach().to("cpu").contiguous().clone() for name, value in t.items()}


def _hook_layer(hook_name: str | None) -> int | None:
    """The layer number in a TransformerLens hook name ("blocks.3.hook_resid_pre" -> 3), else None."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", hook_name or "")
    return int(match.group(1)) if match else None


def save_sae(sae: SAE, path: str | os.PathLike, hook_name: str | None = None, model_name: str | None = None,
             metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Save ``sae`` to the directory ``path`` in SAELens's format (``cfg.json`` and
    ``sae_weights.safetensors``, see the module docstring), readable by ``load_sae`` and by
    SAELens's ``SAE.load_from_disk(path)``.  Returns the directory.

    ``hook_name`` (e.g. "blocks.1.hook_resid_post") and ``model_name`` say where the inputs
    came from; with ``metadata`` (a JSON-serialisable dict) they go in the config's metadata.
    An SAE that ``load_sae`` returned keeps its file's metadata unless these override it.

    The directory is created if needed.  If it already holds an SAE (either file), this
    raises ``FileExistsError`` unless ``overwrite=True``.  Weights that are NaN or infinite
    raise ``ValueError``: such an SAE is broken, and saving it would only move the error.
    Training state (the dead-latent counters, an optimiser) is not saved.
    """
    from safetensors.torch import save_file

    architecture = _architecture_name(sae)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    existing = [name for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME) if (path / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{path} already holds an SAE ({', '.join(existing)}); "
                              "pass overwrite=True to replace it")
    tensors = _saelens_tensors(sae, architecture)
    dtypes = {value.dtype for value in tensors.values()}
    dtype_name = {v: k for k, v in _DTYPES.items()}.get(next(iter(dtypes)))
    if len(dtypes) != 1 or dtype_name is None:
        raise ValueError(f"the SAE's weights must share one dtype of {sorted(_DTYPES)}, got {sorted(map(str, dtypes))}")
    for name, value in tensors.items():
        if not torch.isfinite(value).all():
            raise ValueError(f"the SAE's {name} holds NaN or infinite values; not saving a broken SAE")

    meta = {k: v for k, v in getattr(sae, "saelens_metadata", {}).items() if k not in _RESERVED_METADATA}
    reserved = sorted(_RESERVED_METADATA & set(metadata or {}))
    if reserved:
        raise ValueError(f"metadata keys {reserved} are reserved (save_sae writes them)")
    meta.update(metadata or {})
    if hook_name is not None:
        meta["hook_name"] = hook_name
    if model_name is not None:
        meta["model_name"] = model_name
    meta.setdefault("hook_name", None)
    meta.setdefault("model_name", None)
    course = {"architecture": architecture, "class": type(sae).__name__, "settings": _settings(sae)}
    if architecture == "batchtopk":
        course["threshold_updates"] = int(sae.threshold_updates)
    saelens_architecture = SAELENS_ARCHITECTURES[architecture]
    cfg = {
        "architecture": saelens_architecture,
        "d_in": sae.d_in,
        "d_sae": sae.n_latents,
        "dtype": dtype_name,
        "device": "cpu",
        "apply_b_dec_to_input": True,  # ours always subtract b_dec before encoding
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if saelens_architecture == "topk":
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    cfg["metadata"] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,  # the format's version, not a SAELens install
        "sae_lens_training_version": None,  # not trained by SAELens
        **meta,
        **({"training_architecture": "batchtopk"} if architecture == "batchtopk" else {}),
        _COURSE_KEY: course,
    }
    # SAELens v5 reads these top-level keys (and needs hook_name to be a string); v6 ignores them.
    cfg.update({
        "activation_fn_str": "topk" if saelens_architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": sae.k} if saelens_architecture == "topk" else {},
        "finetuning_scaling_factor": False,
        "model_name": meta["model_name"],
        "hook_name": meta["hook_name"] or "",
        "hook_layer": _hook_layer(meta["hook_name"]),
        "hook_head_index": meta.get("hook_head_index"),
        "context_size": meta.get("context_size"),
        "dataset_path": meta.get("dataset_path"),
        "prepend_bos": meta.get("prepend_bos", True),
        "dataset_trust_remote_code": False,
        "sae_lens_training_version": None,
    })
    try:
        text = json.dumps(cfg, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-serialisable (finite numbers, strings, lists, dicts): {error}") from None

    path.mkdir(parents=True, exist_ok=True)
    # Write each file under a temporary name, then rename: an interrupted save leaves no half file.
    weights_tmp, cfg_tmp = path / (SAE_WEIGHTS_FILENAME + ".tmp"), path / (SAE_CFG_FILENAME + ".tmp")
    save_file(tensors, str(weights_tmp))
    cfg_tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(weights_tmp, path / SAE_WEIGHTS_FILENAME)
    os.replace(cfg_tmp, path / SAE_CFG_FILENAME)
    return path


def _read_cfg(cfg_path: Path) -> dict:
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: an SAE directory needs {SAE_CFG_FILENAME} and "
                                f"{SAE_WEIGHTS_FILENAME}")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{cfg_path} is not valid JSON: {error}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path} must hold a JSON object, got {type(cfg).__name__}")
    for key in ("d_in", "d_sae"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{cfg_path}: {key!r} must be a positive integer, got {value!r}")
    if not isinstance(cfg.get("metadata", {}), dict):
        raise ValueError(f"{cfg_path}: 'metadata' must be a JSON object")
    return cfg


def _read_tensors(weights_path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found: an SAE directory needs {SAE_CFG_FILENAME} and "
                                f"{SAE_WEIGHTS_FILENAME}")
    try:
        return load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{weights_path} is corrupt or truncated (not a readable safetensors file): {error}") from None


def _saelens_architecture(cfg: dict, cfg_path: Path) -> tuple[str, int | None]:
    """(SAELens architecture, k or None), also for configs written before SAELens 6."""
    architecture = cfg.get("architecture", "standard")
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k"))
    if architecture == "standard" and activation == "topk":  # SAELens 5 wrote TopK SAEs this way
        architecture = "topk"
    if architecture not in ("standard", "topk", "jumprelu", "gated"):
        raise ValueError(f"{cfg_path}: architecture {architecture!r} is not supported; load_sae reads "
                         "'standard', 'topk', 'jumprelu' and 'gated'")
    if architecture != "topk" and activation not in ("relu", None):
        raise ValueError(f"{cfg_path}: activation function {activation!r} is not supported (only relu and topk)")
    if architecture == "topk" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"{cfg_path}: a 'topk' SAE needs a positive integer k, got {k!r}")
    return architecture, k


def _exact_log(threshold: Tensor) -> Tensor:
    """log θ, nudged by an ulp or two where needed so that exp(log θ) == θ exactly (as far as the
    float type allows), so a JumpReLU SAE's thresholds survive the round trip bit for bit."""
    log = threshold.log()
    for _ in range(4):
        back = log.exp()
        low, high = back < threshold, back > threshold
        if not (low.any() or high.any()):
            break
        log = torch.where(low, torch.nextafter(log, torch.full_like(log, math.inf)), log)
        log = torch.where(high, torch.nextafter(log, torch.full_like(log, -math.inf)), log)
    return log


def load_sae(path: str | os.PathLike, device: torch.device | str | None = None) -> SAE:
    """Load an SAE saved by ``save_sae``, or any SAELens SAE directory (``cfg.json`` +
    ``sae_weights.safetensors``) of architecture standard, topk, jumprelu or gated.

    ``path`` is the directory (the path of either file in it also works); ``device``
    defaults to ``get_device()``.  Returns the SAE in inference mode (``eval()``), with the
    config's metadata (hook_name, model_name, …) as the dict ``sae.saelens_metadata``.

    A file of ours comes back as an equal object (same class, settings, weights; encode and
    decode give bit-identical outputs).  A foreign SAELens SAE becomes the course class of its
    architecture (standard → ReLUSAE, topk → TopKSAE, jumprelu → JumpReLUSAE, gated →
    GatedSAE; a BatchTopK SAE, which SAELens saves as jumprelu, becomes a JumpReLUSAE with the
    same activations) with default training settings; apply_b_dec_to_input = false is folded into the
    encoder bias, and TopK's rescale_acts_by_decoder_norm and a finetuning scaling factor into
    the weights (the same function, up to float rounding).  Run-time input normalisation
    (layer_norm, constant_norm_rescale, covariance_whitening) is not supported.

    Errors name the file: ``FileNotFoundError`` for a missing directory or file,
    ``ValueError`` for invalid JSON, an unsupported architecture, a missing, unexpected or
    wrongly shaped tensor, NaN or infinite weights, and a corrupt or truncated weights file.
    """
    path = Path(path)
    if path.is_file() and path.name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        path = path.parent
    if not path.exists():
        raise FileNotFoundError(f"no SAE directory at {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory; an SAE is saved as a directory holding "
                                 f"{SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME}")
    cfg_path, weights_path = path / SAE_CFG_FILENAME, path / SAE_WEIGHTS_FILENAME
    cfg = _read_cfg(cfg_path)
    saelens_architecture, k = _saelens_architecture(cfg, cfg_path)
    normalize = cfg.get("normalize_activations", "none")
    if isinstance(normalize, bool):  # SAELens before 4.x wrote a bool
        normalize = "expected_average_only_in" if normalize else "none"
    if normalize not in ("none", "expected_average_only_in", None):
        raise ValueError(f"{cfg_path}: normalize_activations={normalize!r} is not supported (load_sae reads "
                         "SAEs whose inputs are used as they are)")
    if normalize == "expected_average_only_in":
        warnings.warn(f"{cfg_path}: this SAE expects inputs scaled to an average norm of sqrt(d_in); "
                      "scale them yourself", stacklevel=2)
    dtype = _DTYPES.get(str(cfg.get("dtype", "float32")).removeprefix("torch."))
    if dtype is None:
        raise ValueError(f"{cfg_path}: dtype {cfg.get('dtype')!r} is not one of {sorted(_DTYPES)}")
    metadata = dict(cfg.get("metadata", {}))
    course = metadata.pop(_COURSE_KEY, None)
    if course is None:  # a pre-6 config keeps hook_name and friends at the top level
        for key in ("hook_name", "model_name", "hook_head_index", "context_size", "dataset_path", "neuronpedia_id"):
            if key in cfg and key not in metadata:
                metadata[key] = cfg[key] if cfg[key] != "" else None
    if course is not None:
        if not isinstance(course, dict) or course.get("architecture") not in ARCHITECTURES or \
                not isinstance(course.get("settings", {}), dict):
            raise ValueError(f"{cfg_path}: metadata[{_COURSE_KEY!r}] is malformed: {course!r}")
        architecture = course["architecture"]
        if SAELENS_ARCHITECTURES[architecture] != saelens_architecture:
            raise ValueError(f"{cfg_path}: architecture {saelens_architecture!r} does not match the course's "
                             f"{architecture!r} (which SAELens calls {SAELENS_ARCHITECTURES[architecture]!r})")
        settings = course.get("settings", {})
    else:
        architecture = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}[
            saelens_architecture]
        settings = {"k": k} if architecture == "topk" else {}

    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    tensors = _read_tensors(weights_path)
    if saelens_architecture == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()  # older SAELens checkpoints
    scale = tensors.pop("finetuning_scaling_factor", None)
    if scale is None:
        scale = tensors.pop("scaling_factor", None)
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if saelens_architecture == "gated":
        shapes.update(b_gate=(d_sae,), r_mag=(d_sae,), b_mag=(d_sae,))
    else:
        shapes["b_enc"] = (d_sae,)
    if saelens_architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    missing, unexpected = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
    if missing:
        raise ValueError(f"{weights_path} lacks tensor(s) {missing} that a {saelens_architecture!r} SAE needs "
                         f"(it has {sorted(tensors)})")
    if unexpected:
        raise ValueError(f"{weights_path} has tensor(s) {unexpected} that a {saelens_architecture!r} SAE "
                         f"does not use")
    if scale is not None and scale.shape != (d_sae,):
        raise ValueError(f"{weights_path}: the scaling factor has shape {tuple(scale.shape)}, expected ({d_sae},)")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, but {cfg_path.name} "
                             f"says d_in={d_in}, d_sae={d_sae}, so it should be {shape}")
        if not tensors[name].is_floating_point():
            raise ValueError(f"{weights_path}: {name} has dtype {tensors[name].dtype}, expected floating point")
        if not torch.isfinite(tensors[name]).all():
            raise ValueError(f"{weights_path}: {name} holds NaN or infinite values")
    t = {name: value.to(dtype) for name, value in tensors.items()}

    # Fold SAELens options ours lack into the weights (files of ours have none of them).
    if scale is not None and not torch.equal(scale, torch.ones_like(scale)):
        t["W_dec"] = t["W_dec"] * scale.to(dtype)[:, None]
    if saelens_architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        norms = t["W_dec"].norm(dim=1).clamp_min(1e-8)
        t["W_enc"], t["b_enc"], t["W_dec"] = t["W_enc"] * norms, t["b_enc"] * norms, t["W_dec"] / norms[:, None]
    if not cfg.get("apply_b_dec_to_input", True):
        shift = t["b_dec"] @ t["W_enc"]  # (x − b_dec) W_enc + (b + b_dec W_enc) = x W_enc + b
        if saelens_architecture == "gated":
            t["b_gate"], t["b_mag"] = t["b_gate"] + shift, t["b_mag"] + shift * t["r_mag"].exp()
        else:
            t["b_enc"] = t["b_enc"] + shift

    try:
        # A generator of its own: building the SAE must not consume the global random stream.
        sae = make_sae(architecture, d_in, d_sae, device="cpu", generator=torch.Generator().manual_seed(0),
                       **settings)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{cfg_path}: cannot build a {architecture!r} SAE from its settings {settings}: "
                         f"{error}") from None
    sae = sae.to(dtype)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(t[name])
        sae.b_enc.copy_(t["b_gate"] if architecture == "gated" else t["b_enc"])
        if architecture == "gated":
            sae.r_mag.copy_(t["r_mag"])
            sae.b_mag.copy_(t["b_mag"])
        elif architecture == "jumprelu":
            threshold = t["threshold"]
            if (threshold <= 0).any():  # SAELens's relu(pre)·1[pre > θ] equals pre·1[pre > max(θ, 0)]
                threshold = threshold.clamp_min(0.0)
            sae.log_threshold.copy_(_exact_log(threshold))
        elif architecture == "batchtopk":
            threshold = t["threshold"]
            if not torch.equal(threshold, threshold[:1].expand_as(threshold)) or threshold[0] < 0:
                raise ValueError(f"{weights_path}: a BatchTopK SAE's threshold must be one value >= 0 repeated, "
                                 f"got values from {float(threshold.min())} to {float(threshold.max())}")
            sae.threshold.copy_(threshold[0])
            updates = course.get("threshold_updates", 1) if course else 1
            sae.threshold_updates.fill_(int(updates))
    sae.saelens_metadata = {key: value for key, value in metadata.items()
                            if key not in ("sae_lens_version", "sae_lens_training_version")}
    return sae.to(get_device() if device is None else torch.device(device)).eval()
