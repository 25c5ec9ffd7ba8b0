"""Train the course's small language models and save them as package data.

The recipe is ``course_utils.lm.TRAINING_SETTINGS``: a 2-layer GPT (d_model 64, 4 heads,
context 64) trained on 12,000 rows of the generated toy language (``course_utils.language``,
corpus seed 0) for 1,200 AdamW steps of 32 rows, learning rate 3e-3 with 100 warmup steps and
cosine decay; about 80 s per model on one CPU thread.  Two models differ only in their seed (initialisation and batch
order), for universality experiments:

    course_utils/data/lm_seed0.safetensors
    course_utils/data/lm_seed1.safetensors

The safetensors header holds the config, the vocabulary, the settings, the final training and
validation losses (nats/token; validation rows: corpus seed 10,001) and the unigram/bigram
baselines.  ``tests/test_ch05b_lm.py`` checks the files and proves this script reproduces them.

    python scripts/train_lm.py [--seeds 0 1] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from course_utils import language, lm
from course_utils.device import configure_threads

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "course_utils" / "data"


def corpora(settings: dict = lm.TRAINING_SETTINGS) -> tuple[language.Corpus, language.Corpus]:
    """The training and validation corpora of the recipe (labels skipped: not needed to train)."""
    train = language.generate_corpus(settings["n_train"], seed=settings["corpus_seed"], ctx=settings["ctx"],
                                     labels=False)
    val = language.generate_corpus(settings["n_val"], seed=settings["val_seed"], ctx=settings["ctx"], labels=False)
    return train, val


def train_shipped_lm(seed: int, settings: dict = lm.TRAINING_SETTINGS, progress: bool = True,
                     data: tuple[language.Corpus, language.Corpus] | None = None
                     ) -> tuple[lm.GPT, language.Vocab, dict]:
    """Train one model with the recipe on the CPU; returns (model, vocab, metadata)."""
    train, val = data or corpora(settings)
    cfg = lm.GPTConfig(vocab_size=len(train.vocab), n_ctx=settings["ctx"], d_model=settings["d_model"],
                       n_layers=settings["n_layers"], n_heads=settings["n_heads"])
    model = lm.GPT(cfg, seed=seed, device="cpu")
    result = lm.train_lm(model, train, steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                         seed=seed, warmup=settings["warmup"], weight_decay=settings["weight_decay"],
                         min_lr_ratio=settings["min_lr_ratio"], progress=progress, description=f"GPT seed {seed}")
    metadata = dict(
        seed=seed, settings=dict(settings),
        train_loss=lm.evaluate_lm(model, train.tokens[: settings["n_val"]]),
        val_loss=lm.evaluate_lm(model, val.tokens),
        baselines=language.ngram_baselines(train.tokens, val.tokens, len(train.vocab)),
        train_seconds=round(result.seconds, 1), torch=torch.__version__, machine=platform.machine(),
    )
    return model, train.vocab, metadata


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    configure_threads(1)
    data = corpora()
    for seed in args.seeds:
        model, vocab, metadata = train_shipped_lm(seed, data=data)
        path = lm.save_lm(model, vocab, args.out_dir / f"lm_seed{seed}.safetensors", metadata)
        b = metadata["baselines"]
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): train {metadata['train_loss']:.4f}, "
              f"val {metadata['val_loss']:.4f} nats/token (unigram {b['unigram']:.3f}, bigram {b['bigram']:.3f}), "
              f"{metadata['train_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
