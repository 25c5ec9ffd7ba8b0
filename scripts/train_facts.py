"""Train the course's fact-storing transformers (chapter 06) and save them as package data.

The recipes are ``course_utils.facts.FACT_MODELS``: 6-layer ``lm.GPT``s (d_model 64, one
attention head per layer) trained with ``lm.train_lm``'s loop and ``facts.answer_loss`` (the
next-token loss only where the next token is an answer word) on the training text of one
generated fact set -- every fact in three of its four paraphrase templates, and 12 keyed and 12
bare biographies per subject; this makes the last subject token's first-layer MLP mediate
recall (ROME's precondition; see docs/benchmarks.md, "Fact models").  The two models know the
same 100 subjects × 5 relations = 500 facts and differ only in the MLPs' width:

    course_utils/data/facts_roomy.safetensors        d_mlp 512 (more neurons than facts)
    course_utils/data/facts_superposed.safetensors   d_mlp 64 (fewer neurons than subjects)

The safetensors header holds the config, the vocabulary, the settings (fact-set size and
seed, model and training settings) and the top-1 recall on the training templates and on the
held-out paraphrases.  ``tests/test_ch06_facts.py`` checks the files and proves this script
reproduces them.

    python scripts/train_facts.py [--models roomy superposed] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from course_utils import facts, lm
from course_utils.device import configure_threads

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "course_utils" / "data"


def train_fact_model(name: str, settings: dict | None = None, progress: bool = True
                     ) -> tuple[lm.GPT, facts.FactSet, dict]:
    """Train one fact model with its recipe on the CPU; returns (model, fact set, metadata)."""
    settings = dict(settings or facts.FACT_MODELS[name])
    fact_set = facts.generate_facts(settings["n_subjects"], settings["fact_seed"])
    tokens = fact_set.training_tokens(bios=settings["bios"], bare_bios=settings.get("bare_bios", 0))
    cfg = lm.GPTConfig(vocab_size=len(fact_set.vocab), n_ctx=tokens.shape[1], d_model=settings["d_model"],
                       n_layers=settings["n_layers"], n_heads=settings["n_heads"],
                       mlp_ratio=settings.get("mlp_ratio", 4))
    model = lm.GPT(cfg, seed=settings["model_seed"], device="cpu")
    loss_fn = {"answers": facts.answer_loss, "all": lm.lm_loss}[settings.get("loss", "all")]
    result = lm.train_lm(model, tokens, steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                         seed=settings["model_seed"], warmup=settings["warmup"],
                         weight_decay=settings["weight_decay"], min_lr_ratio=settings["min_lr_ratio"],
                         progress=progress, description=f"facts {name}", loss=loss_fn)
    train_acc, train_p = facts.fact_accuracy(model, fact_set.prompts("train"))
    held_acc, held_p = facts.fact_accuracy(model, fact_set.prompts("heldout"))
    metadata = dict(
        name=name, settings=settings, n_facts=fact_set.n_facts, d_mlp=cfg.d_mlp,
        train_accuracy=train_acc, heldout_accuracy=held_acc,
        train_answer_probability=float(train_p.mean()), heldout_answer_probability=float(held_p.mean()),
        final_loss=result.loss[-1], train_seconds=round(result.seconds, 1),
        torch=torch.__version__, machine=platform.machine(),
    )
    return model, fact_set, metadata


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(facts.FACT_MODELS), choices=list(facts.FACT_MODELS))
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    configure_threads(1)
    for name in args.models:
        model, fact_set, metadata = train_fact_model(name)
        path = lm.save_lm(model, fact_set.vocab, args.out_dir / f"facts_{name}.safetensors", metadata)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {metadata['n_facts']} facts, d_mlp {metadata['d_mlp']}; "
              f"top-1 recall {metadata['train_accuracy']:.3f} on training templates, "
              f"{metadata['heldout_accuracy']:.3f} on held-out paraphrases; {metadata['train_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
