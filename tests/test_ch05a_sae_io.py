"""Tests of course_utils.sae_io, saving and loading SAEs in SAELens's on-disk format: round trips of the
five SAEs (bit-identical outputs, equal settings), the fields SAELens needs in cfg.json, a
hand-written SAELens "standard" directory computing SAELens's formula, every error path, and
(only where the optional ``sae_lens`` package is installed) SAELens itself reading our files."""

import importlib.util
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from course_utils.sae import (
    ARCHITECTURES,
    JumpReLUSAE,
    ReLUSAE,
    SyntheticFeatures,
    TopKSAE,
    make_sae,
    train_sae,
)
from course_utils.sae_io import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, load_sae, save_sae

KWARGS = {"relu": {}, "topk": {"k": 3}, "batchtopk": {"k": 3, "threshold_lr": 0.05}, "jumprelu": {"bandwidth": 0.1},
          "gated": {"l1_coefficient": 0.5}}
SAELENS_NAME = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu", "gated": "gated"}
D_IN, N_LATENTS = 8, 24


@pytest.fixture(scope="module")
def data():
    return SyntheticFeatures(32, D_IN, mean_active=3, device="cpu", generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def inputs(data):
    return data(256, torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def trained(data):
    """One SAE per architecture after 25 training steps (non-trivial biases and thresholds)."""
    saes = {}
    for architecture, kwargs in KWARGS.items():
        sae = make_sae(architecture, D_IN, N_LATENTS, device="cpu", generator=torch.Generator().manual_seed(0), **kwargs)
        train_sae(sae, data, steps=25, batch_size=256, lr=3e-3, progress=False)
        saes[architecture] = sae
    return saes


def settings(sae):
    return {name: value for name, value in vars(sae).items() if not name.startswith("_") and name != "training"}


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_round_trip_gives_an_equal_sae_and_bit_identical_outputs(architecture, trained, inputs, tmp_path):
    sae = trained[architecture]
    assert float(sae.b_enc.detach().abs().max()) > 0 and float(sae.b_dec.detach().abs().max()) > 0  # trained, not the init
    assert save_sae(sae, tmp_path / "sae", hook_name="blocks.1.hook_resid_post", model_name="tiny") == tmp_path / "sae"
    loaded = load_sae(tmp_path / "sae", device="cpu")
    assert type(loaded) is type(sae)
    assert not loaded.training
    assert settings(loaded) == settings(sae) | {"saelens_metadata": loaded.saelens_metadata}
    for name, value in sae.named_parameters():
        torch.testing.assert_close(getattr(loaded, name), value, rtol=0, atol=0)
    with torch.no_grad():
        f, f_loaded = sae.encode(inputs), loaded.encode(inputs)
        assert torch.equal(f, f_loaded)
        assert torch.equal(sae.decode(f), loaded.decode(f_loaded))
    assert (f != 0).any() and (f == 0).any()
    assert loaded.saelens_metadata["hook_name"] == "blocks.1.hook_resid_post"
    assert loaded.saelens_metadata["model_name"] == "tiny"


def test_batchtopk_keeps_its_threshold_and_jumprelu_its_exact_thresholds(trained, tmp_path):
    sae = trained["batchtopk"]
    assert float(sae.threshold) > 0
    save_sae(sae, tmp_path / "b")
    loaded = load_sae(tmp_path / "b", device="cpu")
    assert torch.equal(loaded.threshold, sae.threshold)
    assert int(loaded.threshold_updates) == int(sae.threshold_updates) == 25
    weights = load_file(tmp_path / "b" / SAE_WEIGHTS_FILENAME)
    assert torch.equal(weights["threshold"], sae.threshold.expand(N_LATENTS))  # SAELens's JumpReLU form

    jump = trained["jumprelu"]
    save_sae(jump, tmp_path / "j")
    assert torch.equal(load_file(tmp_path / "j" / SAE_WEIGHTS_FILENAME)["threshold"], jump.threshold.detach())
    assert torch.equal(load_sae(tmp_path / "j", device="cpu").threshold, jump.threshold)


def test_loading_does_not_touch_the_global_random_stream(trained, tmp_path):
    save_sae(trained["relu"], tmp_path / "sae")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_sae(tmp_path / "sae", device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_metadata_is_kept_and_carried_through_a_reload(trained, tmp_path):
    save_sae(trained["topk"], tmp_path / "a", hook_name="blocks.0.hook_resid_pre", metadata={"note": "run 3", "seed": 7})
    loaded = load_sae(tmp_path / "a", device="cpu")
    assert loaded.saelens_metadata == {"hook_name": "blocks.0.hook_resid_pre", "model_name": None, "note": "run 3",
                                       "seed": 7}
    save_sae(loaded, tmp_path / "b", model_name="tiny")  # keeps the loaded metadata, adds model_name
    again = load_sae(tmp_path / "b", device="cpu").saelens_metadata
    assert again == {"hook_name": "blocks.0.hook_resid_pre", "model_name": "tiny", "note": "run 3", "seed": 7}


# --------------------------------------------------------------------------------------
# The format
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_cfg_json_has_the_fields_saelens_reads(architecture, trained, tmp_path):
    save_sae(trained[architecture], tmp_path, hook_name="blocks.2.hook_mlp_out", model_name="tiny")
    cfg = json.loads((tmp_path / SAE_CFG_FILENAME).read_text())
    # SAELens 6
    assert cfg["architecture"] == SAELENS_NAME[architecture]
    assert (cfg["d_in"], cfg["d_sae"]) == (D_IN, N_LATENTS)
    assert cfg["dtype"] == "float32" and cfg["device"] == "cpu"
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none" and cfg["reshape_activations"] == "none"
    assert cfg["metadata"]["sae_lens_version"] == "6.0.0"
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_mlp_out" and cfg["metadata"]["model_name"] == "tiny"
    assert cfg["metadata"]["superposition_course"]["architecture"] == architecture
    # SAELens 5's top-level fields
    assert cfg["hook_name"] == "blocks.2.hook_mlp_out" and cfg["hook_layer"] == 2 and cfg["model_name"] == "tiny"
    assert cfg["finetuning_scaling_factor"] is False
    if architecture == "topk":
        assert cfg["k"] == 3 and cfg["rescale_acts_by_decoder_norm"] is False
        assert cfg["activation_fn_str"] == "topk" and cfg["activation_fn_kwargs"] == {"k": 3}
    else:
        assert cfg["activation_fn_str"] == "relu"
    if architecture == "batchtopk":
        assert cfg["metadata"]["training_architecture"] == "batchtopk"
    names = set(load_file(tmp_path / SAE_WEIGHTS_FILENAME))
    expected = {"W_enc", "W_dec", "b_dec"} | ({"b_gate", "r_mag", "b_mag"} if architecture == "gated" else {"b_enc"})
    if SAELENS_NAME[architecture] == "jumprelu":
        expected.add("threshold")
    assert names == expected


def write_saelens(path, cfg, tensors):
    path.mkdir(parents=True, exist_ok=True)
    (path / SAE_CFG_FILENAME).write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / SAE_WEIGHTS_FILENAME))


def standard_weights(d_in=3, d_sae=4):
    g = torch.Generator().manual_seed(5)
    return {"W_enc": torch.randn(d_in, d_sae, generator=g), "b_enc": torch.randn(d_sae, generator=g),
            "W_dec": torch.randn(d_sae, d_in, generator=g), "b_dec": torch.randn(d_in, generator=g)}


def test_a_hand_written_saelens_standard_sae_loads_and_computes_saelens_formula(tmp_path):
    w = standard_weights()
    cfg = {"architecture": "standard", "d_in": 3, "d_sae": 4, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.0.hook_resid_pre", "model_name": "gpt2"}}
    write_saelens(tmp_path, cfg, w)
    sae = load_sae(tmp_path, device="cpu")
    assert isinstance(sae, ReLUSAE) and (sae.d_in, sae.n_latents) == (3, 4)
    assert sae.saelens_metadata == {"hook_name": "blocks.0.hook_resid_pre", "model_name": "gpt2"}
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.3, 3.0]])
    f = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])  # SAELens's StandardSAE.encode
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), f, rtol=0, atol=1e-6)
        torch.testing.assert_close(sae.decode(f), f @ w["W_dec"] + w["b_dec"], rtol=0, atol=1e-6)
    assert (f > 0).any() and (f == 0).any()


def test_saelens_variants_fold_into_our_weights(tmp_path):
    """apply_b_dec_to_input = false (pre = x W_enc + b_enc), a pre-6 TopK config (architecture
    standard, activation_fn_str topk) and a JumpReLU with an old log_threshold tensor."""
    w = standard_weights()
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.3, 3.0], [2.0, 1.0, -1.0]])
    write_saelens(tmp_path / "a", {"d_in": 3, "d_sae": 4, "dtype": "float32", "apply_b_dec_to_input": False,
                                   "hook_name": "blocks.0.hook_resid_pre"}, w)
    sae = load_sae(tmp_path / "a", device="cpu")
    assert sae.saelens_metadata["hook_name"] == "blocks.0.hook_resid_pre"
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), torch.relu(x @ w["W_enc"] + w["b_enc"]), rtol=0, atol=1e-5)

    write_saelens(tmp_path / "b", {"architecture": "standard", "d_in": 3, "d_sae": 4, "dtype": "float32",
                                   "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2}}, w)
    topk = load_sae(tmp_path / "b", device="cpu")
    assert isinstance(topk, TopKSAE) and topk.k == 2

    theta = torch.tensor([0.1, 0.5, 1.0, 2.0])
    write_saelens(tmp_path / "c", {"architecture": "jumprelu", "d_in": 3, "d_sae": 4, "dtype": "float32"},
                  {**w, "log_threshold": theta.log()})
    jump = load_sae(tmp_path / "c", device="cpu")
    assert isinstance(jump, JumpReLUSAE)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    with torch.no_grad():
        torch.testing.assert_close(jump.encode(x), torch.relu(pre) * (pre > theta), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_save_refuses_to_overwrite_unless_asked(trained, tmp_path):
    save_sae(trained["relu"], tmp_path)
    with pytest.raises(FileExistsError, match="already holds an SAE.*overwrite=True"):
        save_sae(trained["topk"], tmp_path)
    assert isinstance(load_sae(tmp_path, device="cpu"), ReLUSAE)
    save_sae(trained["topk"], tmp_path, overwrite=True)
    assert isinstance(load_sae(tmp_path, device="cpu"), TopKSAE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME]  # no temp files
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        save_sae(trained["relu"], tmp_path / "file")


def test_save_rejects_nan_weights_bad_metadata_and_other_classes(tmp_path):
    sae = make_sae("relu", 4, 6, device="cpu", generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="reserved"):
        save_sae(sae, tmp_path / "a", metadata={"sae_lens_version": "1"})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_sae(sae, tmp_path / "b", metadata={"x": object()})
    with torch.no_grad():
        sae.b_enc[2] = math.nan
    with pytest.raises(ValueError, match="b_enc holds NaN"):
        save_sae(sae, tmp_path / "c")
    assert not (tmp_path / "c").exists()

    class MySAE(ReLUSAE):
        pass

    with pytest.raises(TypeError, match="MySAE"):
        save_sae(MySAE(4, 6, device="cpu"), tmp_path / "d")


@pytest.fixture
def saved(trained, tmp_path):
    save_sae(trained["jumprelu"], tmp_path / "sae")
    return tmp_path / "sae"


def edit_cfg(path, change):
    cfg = json.loads((path / SAE_CFG_FILENAME).read_text())
    change(cfg)
    (path / SAE_CFG_FILENAME).write_text(json.dumps(cfg))


def edit_weights(path, change):
    tensors = load_file(path / SAE_WEIGHTS_FILENAME)
    change(tensors)
    save_file(tensors, str(path / SAE_WEIGHTS_FILENAME))


def test_load_accepts_the_path_of_a_file_in_the_directory(saved):
    assert isinstance(load_sae(saved / SAE_CFG_FILENAME, device="cpu"), JumpReLUSAE)


def test_load_errors_for_missing_directory_and_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no SAE directory at .*nowhere"):
        load_sae(tmp_path / "nowhere")
    (saved / SAE_WEIGHTS_FILENAME).rename(tmp_path / "w")
    with pytest.raises(FileNotFoundError, match=f"{SAE_WEIGHTS_FILENAME} not found"):
        load_sae(saved)
    (saved / SAE_CFG_FILENAME).unlink()
    with pytest.raises(FileNotFoundError, match=f"{SAE_CFG_FILENAME} not found"):
        load_sae(saved)


def test_load_errors_for_bad_json_and_bad_config(saved):
    (saved / SAE_CFG_FILENAME).write_text('{"d_in": 8,')
    with pytest.raises(ValueError, match=f"{SAE_CFG_FILENAME} is not valid JSON"):
        load_sae(saved)
    (saved / SAE_CFG_FILENAME).write_text('[1, 2]')
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_sae(saved)
    (saved / SAE_CFG_FILENAME).write_text('{"d_in": 8}')
    with pytest.raises(ValueError, match="'d_sae' must be a positive integer"):
        load_sae(saved)


def test_load_errors_for_unknown_architecture_and_options(saved):
    edit_cfg(saved, lambda c: c.update(architecture="matryoshka"))
    with pytest.raises(ValueError, match=f"{SAE_CFG_FILENAME}: architecture 'matryoshka' is not supported"):
        load_sae(saved)
    edit_cfg(saved, lambda c: c.update(architecture="gated"))
    with pytest.raises(ValueError, match="does not match the course's 'jumprelu'"):
        load_sae(saved)
    edit_cfg(saved, lambda c: c.update(architecture="jumprelu", normalize_activations="layer_norm"))
    with pytest.raises(ValueError, match="normalize_activations='layer_norm' is not supported"):
        load_sae(saved)
    edit_cfg(saved, lambda c: c.update(normalize_activations="none", dtype="int8"))
    with pytest.raises(ValueError, match="dtype 'int8'"):
        load_sae(saved)
    edit_cfg(saved, lambda c: c.update(dtype="float32") or c["metadata"]["superposition_course"]["settings"].update(
        bandwidth=-1))
    with pytest.raises(ValueError, match="cannot build a 'jumprelu' SAE.*bandwidth"):
        load_sae(saved)


def test_load_errors_for_shape_mismatch(saved):
    edit_cfg(saved, lambda c: c.update(d_sae=N_LATENTS + 1))
    with pytest.raises(ValueError, match=rf"{SAE_WEIGHTS_FILENAME}: W_enc has shape \(8, 24\), but cfg.json says "
                                         rf"d_in=8, d_sae=25, so it should be \(8, 25\)"):
        load_sae(saved)


def test_load_errors_for_missing_and_unexpected_tensors(saved):
    edit_weights(saved, lambda t: t.pop("threshold"))
    with pytest.raises(ValueError, match=r"lacks tensor\(s\) \['threshold'\] that a 'jumprelu' SAE needs"):
        load_sae(saved)
    edit_weights(saved, lambda t: t.update(threshold=torch.ones(N_LATENTS), extra=torch.ones(2)))
    with pytest.raises(ValueError, match=r"has tensor\(s\) \['extra'\] that a 'jumprelu' SAE does not use"):
        load_sae(saved)


def test_load_errors_for_nan_weights(saved):
    def poison(t):
        t["W_dec"][3, 1] = math.nan
    edit_weights(saved, poison)
    with pytest.raises(ValueError, match=f"{SAE_WEIGHTS_FILENAME}: W_dec holds NaN or infinite values"):
        load_sae(saved)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_load_errors_for_corrupt_weights(saved, damage):
    weights = saved / SAE_WEIGHTS_FILENAME
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\x01 not safetensors" * 10,
                         "empty": b""}[damage])
    with pytest.raises(ValueError, match=f"{SAE_WEIGHTS_FILENAME} is corrupt or truncated"):
        load_sae(saved)


def test_batchtopk_threshold_must_be_one_value(trained, tmp_path):
    save_sae(trained["batchtopk"], tmp_path)
    edit_weights(tmp_path, lambda t: t["threshold"].__setitem__(0, 9.0))
    with pytest.raises(ValueError, match="BatchTopK SAE's threshold must be one value"):
        load_sae(tmp_path)


# --------------------------------------------------------------------------------------
# SAELens itself (optional: pip install 'superposition-course[saelens]')
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("sae_lens") is None,
                    reason="sae_lens is not installed (optional extra: pip install 'superposition-course[saelens]')")
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_saelens_loads_our_files_with_the_same_outputs(architecture, trained, inputs, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sae_lens import SAE as SAELensSAE

        sae = trained[architecture]
        save_sae(sae, tmp_path / "ours", hook_name="blocks.1.hook_resid_post", model_name="tiny")
        lens = SAELensSAE.load_from_disk(str(tmp_path / "ours"), device="cpu")
        assert lens.cfg.architecture() == SAELENS_NAME[architecture]
        assert lens.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
        with torch.no_grad():
            f, f_lens = sae.encode(inputs), lens.encode(inputs)
            torch.testing.assert_close(f_lens, f, rtol=0, atol=1e-5)
            torch.testing.assert_close(lens.decode(f_lens), sae.decode(f), rtol=0, atol=1e-5)
        # and back: SAELens saves it again, and we rebuild our own class from that
        lens.save_model(str(tmp_path / "resaved"))
    again = load_sae(tmp_path / "resaved", device="cpu")
    assert type(again) is type(sae)
    with torch.no_grad():
        torch.testing.assert_close(again.encode(inputs), sae.encode(inputs), rtol=0, atol=1e-6)
