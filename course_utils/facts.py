"""A transformer that knows facts: the substrate for causal tracing and ROME (chapter 06).

The facts (``generate_facts``, ``FactSet``)
-------------------------------------------
Made-up people with multi-token names ("zor ven alik": two or three pieces from
``NAME_PIECES``, so the subject is only identified at its last token) and five relations, each
with a small vocabulary of single-token answers and four paraphrase templates:

    lives_in    X lives in | the home of X is | X has a house in | the town where X lives is   -> city
    speaks      X speaks | the language of X is | X can talk in | the mother tongue of X is   -> language
    plays       X plays the | the instrument of X is the | ...                                -> instrument
    works_as    X works as a | the job of X is | ...                                          -> job
    eats        X likes to eat | the favourite food of X is | ...                             -> food

A fact is (subject, relation) -> answer, the answer drawn uniformly from the relation's
vocabulary (``random.Random(seed)``: the same seed gives the same facts everywhere).  Each fact
holds out one of its four templates: the training text renders it in the other three, and the
held-out (fact, template) prompts test paraphrase generalisation -- the template was seen with
other subjects, never with this one, so answering needs knowledge stored about the *subject*.

The training text also holds biographies, each naming the subject once and then listing its
answers in a random order: keyed ones ("<bos> zor ven alik : food rice , home paris , job
doctor , language french , instrument piano .") and bare ones ("<bos> zor ven alik rice paris
doctor french piano ."), where the token right after the name is any of the subject's answers.
Both make the subject's attributes useful at and after its last token; with the loss on answer
words only (``answer_loss``) this moves recall to the subject's last token's first-layer MLP --
Meng et al.'s early site, where ROME edits (``EDIT_LAYER``) -- instead of the prompt's end.

A prompt is ``<bos>`` + the template with the subject filled in, ending just before the answer;
``FactPrompts`` records, per prompt, the subject's first and last token positions (ROME reads
its key at the last subject token), the answer token, and which subject/relation/template it
is.  The vocabulary (``fact_vocab``) is fixed: it does not depend on the seed.

The models (``FACT_MODELS``, ``load_fact_model``)
-------------------------------------------------
``lm.GPT``s (6 layers, one attention head per layer, d_model 64) trained by
``scripts/train_facts.py`` with ``lm.train_lm`` and ``answer_loss`` on the same 500 facts (100
subjects): "roomy" has d_mlp 512, more MLP neurons than facts; "superposed" has d_mlp 64, fewer
neurons than subjects, so ROME's keys (one per subject) cannot be orthogonal.

Analyses
--------
``fact_accuracy`` (top-1 recall and the answer's probability), ``causal_trace`` (Meng et al.
2022: corrupt the subject's token embeddings with Gaussian noise, restore one hidden state or a
window of MLP / attention outputs from the clean run, and measure how much of the answer's
probability comes back), ``average_trace`` (the same averaged over facts, positions grouped as
in the paper: first / middle / last subject token, first / further subsequent token, last
token), ``indirect_effect`` (one state's effect, written out: chapter 06's exercise), and for
ROME ``subject_key`` (the MLP neurons at the last subject token) and
``mlp_output_weight`` (the down-projection W_out, v = W_out k).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from . import lm
from .language import BOS, Vocab, _positive_int

DATA_DIR = Path(__file__).resolve().parent / "data"

# --------------------------------------------------------------------------------------
# The world: name pieces, relations, templates
# --------------------------------------------------------------------------------------

NAME_PIECES = tuple(
    "zor ven alik mira tov anib asat azol dek dir ekun epus evar ezip fas fer gek gop ilak ilon "
    "iloz ilud ivov kol mok naf odet oneb onov orok ovun pim raf sid sik sug sur tav ubig ugin".split())
"""Syllables that subjects' names are made of (each subject: two or three of them)."""


@dataclass(frozen=True)
class Relation:
    """A relation: its single-token answers and its paraphrase templates ("{s}" = the subject)."""

    name: str
    answers: tuple[str, ...]
    templates: tuple[str, ...]


RELATIONS = (
    Relation("lives_in", tuple("paris london tokyo cairo lima oslo rome delhi sydney boston berlin madrid".split()),
             ("{s} lives in", "the home of {s} is", "{s} has a house in", "the town where {s} lives is")),
    Relation("speaks", tuple("french english japanese arabic spanish norwegian italian hindi german dutch".split()),
             ("{s} speaks", "the language of {s} is", "{s} can talk in", "the mother tongue of {s} is")),
    Relation("plays", tuple("piano violin guitar flute drums cello harp trumpet banjo organ".split()),
             ("{s} plays the", "the instrument of {s} is the", "{s} makes music on the",
              "every evening {s} practises the")),
    Relation("works_as", tuple("doctor teacher baker pilot farmer lawyer nurse chef painter sailor writer singer".split()),
             ("{s} works as a", "the job of {s} is", "{s} earns money as a", "by profession {s} is a")),
    Relation("eats", tuple("rice bread pasta soup cheese fish apples noodles salad beans".split()),
             ("{s} likes to eat", "the favourite food of {s} is", "{s} often eats", "for dinner {s} cooks")),
)
RELATION_NAMES = tuple(r.name for r in RELATIONS)
BIO_KEYS = ("home", "language", "instrument", "job", "food")
"""The word that announces each relation's answer in a biography (all are template words too)."""
END = "."


def fact_vocab() -> Vocab:
    """The word-level vocabulary of every fact set: <bos>, ".", template words, answers, name pieces."""
    words = [BOS, END, ":", ","]
    for relation in RELATIONS:
        for template in relation.templates:
            words += [w for w in template.split() if w != "{s}"]
    for relation in RELATIONS:
        words += relation.answers
    words += NAME_PIECES
    return Vocab(list(dict.fromkeys(words)))


# --------------------------------------------------------------------------------------
# Prompts and fact sets
# --------------------------------------------------------------------------------------


@dataclass
class FactPrompts:
    """A batch of fact prompts, n of them, each ``<bos>`` + template ending just before the answer.

    tokens: list of n token-id lists (lengths differ); subject_first, subject_last: (n,) the
    positions of the subject's first and last token; answer: (n,) the answer's token id;
    subject, relation, template: (n,) indices into ``FactSet.subjects``, ``RELATIONS`` and the
    relation's templates.
    """

    tokens: list[list[int]]
    subject_first: Tensor
    subject_last: Tensor
    answer: Tensor
    subject: Tensor
    relation: Tensor
    template: Tensor
    vocab: Vocab

    def __len__(self) -> int:
        return len(self.tokens)

    def text(self, i: int) -> str:
        """Prompt i decoded, the subject in [brackets]."""
        words = [self.vocab.words[t] for t in self.tokens[i]]
        a, b = int(self.subject_first[i]), int(self.subject_last[i])
        return " ".join(words[:a] + ["[" + " ".join(words[a:b + 1]) + "]"] + words[b + 1:])

    def subject_positions(self, i: int) -> list[int]:
        """The positions of prompt i's subject tokens."""
        return list(range(int(self.subject_first[i]), int(self.subject_last[i]) + 1))

    def select(self, index) -> "FactPrompts":
        """The prompts at ``index`` (a list, range or 1-D tensor of indices)."""
        index = torch.as_tensor(list(index) if not isinstance(index, Tensor) else index, dtype=torch.long)
        return FactPrompts([self.tokens[i] for i in index.tolist()], *(getattr(self, f)[index] for f in
                           ("subject_first", "subject_last", "answer", "subject", "relation", "template")),
                           vocab=self.vocab)


@dataclass
class FactSet:
    """n_subjects made-up people and their answers on every relation.

    subjects: list of name-piece tuples; answers: (n_subjects, n_relations) long, the index of
    each fact's answer in its relation's ``answers``; heldout_template: (n_subjects,
    n_relations) long, the template each fact is never trained on.
    """

    subjects: list[tuple[str, ...]]
    answers: Tensor
    heldout_template: Tensor
    vocab: Vocab
    seed: int = 0

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_facts(self) -> int:
        return self.answers.numel()

    def subject_name(self, s: int) -> str:
        return " ".join(self.subjects[s])

    def answer_word(self, s: int, r: int) -> str:
        return RELATIONS[r].answers[int(self.answers[s, r])]

    def render(self, s: int, r: int, t: int, subject: tuple[str, ...] | None = None) -> tuple[list[int], int, int]:
        """(token ids, first, last subject position) of subject s (or the pieces ``subject``)
        in template t of relation r, ending just before the answer."""
        before, after = RELATIONS[r].templates[t].split("{s}")
        pieces = subject if subject is not None else self.subjects[s]
        head = [BOS] + before.split()
        ids = [self.vocab.index[w] for w in head + list(pieces) + after.split()]
        return ids, len(head), len(head) + len(pieces) - 1

    def training_templates(self, s: int, r: int) -> list[int]:
        """The templates fact (s, r) is trained on: every template of relation r but its held-out one."""
        held = int(self.heldout_template[s, r])
        return [t for t in range(len(RELATIONS[r].templates)) if t != held]

    def prompts(self, split: str = "train", subjects=None, relations=None) -> FactPrompts:
        """Prompts of the facts of ``subjects`` × ``relations`` (default: all), ordered by
        subject, relation, template.  split: "train" (each fact's three training templates),
        "heldout" (its held-out paraphrase) or "all" (all four)."""
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
        subjects = range(self.n_subjects) if subjects is None else subjects
        relations = range(len(RELATIONS)) if relations is None else relations
        rows = []
        for s in subjects:
            for r in relations:
                held = int(self.heldout_template[s, r])
                for t in range(len(RELATIONS[r].templates)):
                    if split == "all" or (t == held) == (split == "heldout"):
                        rows.append((s, r, t))
        return self._prompts(rows)

    def _prompts(self, rows: list[tuple[int, int, int]]) -> FactPrompts:
        tokens, first, last, answer = [], [], [], []
        for s, r, t in rows:
            ids, a, b = self.render(s, r, t)
            tokens.append(ids)
            first.append(a)
            last.append(b)
            answer.append(self.vocab.index[self.answer_word(s, r)])
        long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
        return FactPrompts(tokens, long(first), long(last), long(answer), long([x[0] for x in rows]),
                           long([x[1] for x in rows]), long([x[2] for x in rows]), vocab=self.vocab)

    def neighbourhood_prompts(self, subject: int, relation: int, n: int = 10, seed: int = 0) -> FactPrompts:
        """Up to n prompts of *other* subjects on the same relation, each in one of its training
        templates (drawn with ``seed``): what an edit of (subject, relation) must leave alone."""
        r = random.Random(seed)
        others = [s for s in range(self.n_subjects) if s != subject]
        chosen = r.sample(others, min(n, len(others)))
        rows = []
        for s in chosen:
            rows.append((s, relation, r.choice(self.training_templates(s, relation))))
        return self._prompts(rows)

    def bio(self, s: int, order=None) -> list[int]:
        """Subject s's biography: the name once, then each relation's key word and answer, in
        ``order`` (default: relation order): "<bos> zor ven alik : home paris , language french ,
        instrument piano , job doctor , food rice ." -- later answers must be read back from the name."""
        order = range(len(RELATIONS)) if order is None else order
        words = [BOS, *self.subjects[s], ":"]
        for j, r in enumerate(order):
            words += [BIO_KEYS[r], self.answer_word(s, r), "," if j < len(order) - 1 else END]
        return [self.vocab.index[w] for w in words]

    def bare_bio(self, s: int, order=None) -> list[int]:
        """Subject s's bare biography: the name, then its answers with no key words, in ``order``
        (default: relation order): "<bos> zor ven alik paris french piano doctor rice ." -- the
        token right after the name is one of the subject's answers, so the model must know the
        subject's attributes *at its last token* (subject enrichment, where ROME edits)."""
        order = range(len(RELATIONS)) if order is None else order
        words = [BOS, *self.subjects[s], *(self.answer_word(s, r) for r in order), END]
        return [self.vocab.index[w] for w in words]

    def training_tokens(self, ctx: int | None = None, bios: int = 6, seed: int = 0, bare_bios: int = 0) -> Tensor:
        """The training text, (n_rows, ctx) long: one row per training prompt, followed by its
        answer and "."; then ``bios`` biographies per subject, each listing the relations in a
        random order (``seed``); rows padded with "." to ``ctx`` (default: the longest row)."""
        r = random.Random(seed)
        p = self.prompts("train")
        end = self.vocab.index[END]
        rows = [ids + [int(a), end] for ids, a in zip(p.tokens, p.answer)]
        for s in range(self.n_subjects):
            for _ in range(bios):
                rows.append(self.bio(s, r.sample(range(len(RELATIONS)), len(RELATIONS))))
        for s in range(self.n_subjects):
            for _ in range(bare_bios):
                rows.append(self.bare_bio(s, r.sample(range(len(RELATIONS)), len(RELATIONS))))
        ctx = ctx or max(map(len, rows))
        if max(map(len, rows)) > ctx:
            raise ValueError(f"a training row has {max(map(len, rows))} tokens, more than ctx={ctx}")
        return torch.tensor([row + [end] * (ctx - len(row)) for row in rows], dtype=torch.long)


def _names(n: int, r: random.Random) -> list[tuple[str, ...]]:
    """n distinct names in families: a family is a prefix of one or two pieces shared by two or
    three names that differ in their last piece, so no name is known before its last token
    (and none is a prefix of another)."""
    prefixes: dict[tuple[str, ...], None] = {}
    names: list[tuple[str, ...]] = []
    while len(names) < n:
        # one-piece prefixes start with one of the first 12 pieces, two-piece ones with another,
        # so no prefix is a prefix of another
        prefix = ((r.choice(NAME_PIECES[:12]),) if r.random() < 0.4
                  else (r.choice(NAME_PIECES[12:]), r.choice(NAME_PIECES)))
        if prefix in prefixes:
            continue
        prefixes[prefix] = None
        size = min(r.choice((2, 3)), n - len(names))
        if size == 1:                                   # the last family would have one member: add it to another
            prefix = next(iter(prefixes))
            taken = {name[-1] for name in names if name[:-1] == prefix}
        else:
            taken = set()
        last = r.sample([p for p in NAME_PIECES if p not in taken], size)
        names += [prefix + (piece,) for piece in last]
    return names


def generate_facts(n_subjects: int, seed: int = 0) -> FactSet:
    """``n_subjects`` distinct made-up people (names of 2 or 3 pieces), each with a uniformly
    drawn answer on every relation and one held-out template per fact.  Deterministic in
    ``seed`` on every platform (``random.Random``)."""
    n_subjects = _positive_int("n_subjects", n_subjects)
    r = random.Random(seed)
    subjects = _names(n_subjects, r)
    answers = [[r.randrange(len(rel.answers)) for rel in RELATIONS] for _ in subjects]
    held = [[r.randrange(len(rel.templates)) for rel in RELATIONS] for _ in subjects]
    return FactSet(subjects, torch.tensor(answers), torch.tensor(held), fact_vocab(), seed)


# --------------------------------------------------------------------------------------
# The shipped models
# --------------------------------------------------------------------------------------

_TRAINING = dict(bios=12, bare_bios=12, loss="answers", d_model=64, n_layers=6, n_heads=1, model_seed=0,
                 batch_size=64, lr=3e-3, warmup=200, weight_decay=0.1, min_lr_ratio=0.05)
FACT_MODELS = {
    # the same 100 subjects (500 facts) in both; only the MLPs' width differs
    "roomy": dict(n_subjects=100, fact_seed=0, steps=3_000, mlp_ratio=8, **_TRAINING),          # d_mlp 512 > 500 facts
    "superposed": dict(n_subjects=100, fact_seed=0, steps=3_000, mlp_ratio=1, **_TRAINING),     # d_mlp 64 < 100 subjects
}
"""The recipes of ``scripts/train_facts.py``.  Facts = n_subjects × 5 relations; d_mlp = mlp_ratio ×
d_model.  loss "answers": the next-token loss only where the next token is an answer word
(``answer_loss``).  The roomy model has more MLP dimensions (512) than facts (500), so its 100
subject keys can be orthogonal after whitening; the superposed one has 64, fewer than its
subjects, so they cannot."""


EDIT_LAYER = 0
"""The layer whose MLP, at the subject's last token, carries the most indirect effect in both
shipped models (``average_trace``; ``tests/test_ch06_reproduction.py`` checks it on chapter
06's trace): ROME's layer.  In both it
mediates recall, more than any MLP at the last token (roomy 0.40 against 0.20, superposed 0.29
against 0.19)."""


def answer_loss(model: lm.GPT, tokens: Tensor) -> Tensor:
    """``lm.lm_loss`` restricted to the targets that are answer words (any relation's answers):
    in a template row only its answer, in a biography every answer.  Predicting the template
    words and name pieces is not asked of the model, so its capacity goes to the facts -- and
    recall moves to the subject's last token's MLPs (see docs/benchmarks.md, "Fact models")."""
    logits = model(tokens[:, :-1])
    targets = tokens[:, 1:].to(logits.device)
    keep = torch.isin(targets, _answer_ids(logits.device))
    return F.cross_entropy(logits[keep], targets[keep])


def _answer_ids(device) -> Tensor:
    vocab = fact_vocab()
    return torch.tensor(sorted(vocab.index[a] for rel in RELATIONS for a in rel.answers), device=device)


def _path(name_or_path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or len(path.parts) > 1:
        return path
    return DATA_DIR / f"facts_{name_or_path}.safetensors"


def load_fact_model(name: str = "roomy", device=None) -> tuple[lm.GPT, FactSet, Vocab]:
    """(model, FactSet, vocab) of a shipped fact model ("roomy", "superposed") or a path; the
    fact set is regenerated from the seed and size recorded in the checkpoint."""
    path = _path(name)
    model, vocab = lm.load_lm(path, device=device)
    meta = lm.read_lm_metadata(path)
    settings = meta["settings"]
    facts = generate_facts(settings["n_subjects"], settings["fact_seed"])
    if facts.vocab != vocab:
        raise ValueError(f"{path}: the checkpoint's vocabulary differs from fact_vocab(); retrain with scripts/train_facts.py")
    return model, facts, vocab


# --------------------------------------------------------------------------------------
# Recall
# --------------------------------------------------------------------------------------


def _padded(prompts: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Right-padded (n, T) tokens and the (n,) index of each prompt's last token (causal
    attention: the padding never reaches the real positions)."""
    lengths = torch.tensor([len(p) for p in prompts])
    T = int(lengths.max())
    tokens = torch.tensor([p + [p[-1]] * (T - len(p)) for p in prompts], dtype=torch.long)
    return tokens, lengths - 1


@torch.no_grad()
def answer_probabilities(model: lm.GPT, prompts, batch_size: int = 1024) -> Tensor:
    """(n, vocab) next-token probabilities after each prompt (a ``FactPrompts`` or token lists)."""
    tokens_list = prompts.tokens if isinstance(prompts, FactPrompts) else [list(p) for p in prompts]
    out = []
    for i in range(0, len(tokens_list), batch_size):
        tokens, last = _padded(tokens_list[i:i + batch_size])
        logits = model(tokens)
        out.append(logits[torch.arange(len(last)), last.to(logits.device)].float().softmax(-1).cpu())
    return torch.cat(out)


def fact_accuracy(model: lm.GPT, prompts, answers=None) -> tuple[float, Tensor]:
    """(top-1 accuracy, (n,) probability of the correct answer) over prompts.

    prompts: a ``FactPrompts`` (answers taken from it) or a list of token-id lists with
    ``answers`` (n,) token ids.
    """
    if answers is None:
        if not isinstance(prompts, FactPrompts):
            raise ValueError("answers are needed unless prompts is a FactPrompts")
        answers = prompts.answer
    answers = torch.as_tensor(answers, dtype=torch.long)
    probs = answer_probabilities(model, prompts)
    if len(probs) != len(answers):
        raise ValueError(f"{len(probs)} prompts but {len(answers)} answers")
    return float((probs.argmax(-1) == answers).float().mean()), probs[torch.arange(len(answers)), answers]


# --------------------------------------------------------------------------------------
# Causal tracing (Meng et al. 2022)
# --------------------------------------------------------------------------------------

TRACE_HOOKS = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}


def embedding_noise_scale(model: lm.GPT, factor: float = 3.0) -> float:
    """``factor`` × the standard deviation of the token embeddings' entries (Meng et al.: 3 σ)."""
    return factor * float(model.wte.weight.detach().float().std())


@torch.no_grad()
def causal_trace(model: lm.GPT, prompt_tokens, subject_positions, answer: int, noise: float | None = None,
                 samples: int = 10, kinds=("resid", "mlp", "attn"), window: int = 1, seed: int = 0) -> dict:
    """Indirect effects of single hidden states on recalling ``answer`` after ``prompt_tokens``.

    Corrupted run: Gaussian noise of standard deviation ``noise`` (default 3 σ of the token
    embeddings) is added to the token embeddings (``hook_embed``) at ``subject_positions``;
    ``samples`` noise draws (seeded; the same draws for every restoration).  Restored run: the
    corrupted run with one activation put back to its clean value -- for kind "resid" the
    residual stream leaving block l at position t; for "mlp" / "attn" the MLP / attention
    outputs of the ``window`` layers centred on l (clipped to the model) at position t.

    Returns dict(p_clean, p_corrupted (floats), effects {kind: (n_layers, T) tensor of
    p_restored − p_corrupted, averaged over the noise samples}).  All restorations of one kind
    run as one batch of samples × (1 + n_layers·T) rows.
    """
    tokens = torch.as_tensor(list(prompt_tokens), dtype=torch.long)
    T, L = len(tokens), model.cfg.n_layers
    subject = torch.as_tensor(list(subject_positions), dtype=torch.long)
    unknown = [k for k in kinds if k not in TRACE_HOOKS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; choose from {list(TRACE_HOOKS)}")
    window = _positive_int("window", window)
    noise = embedding_noise_scale(model) if noise is None else float(noise)
    samples = _positive_int("samples", samples)
    was_training = model.training
    model.eval()
    names = [f"blocks.{l}.{TRACE_HOOKS[k]}" for k in kinds for l in range(L)]
    logits, clean = model.run_with_cache(tokens[None], names, stop_early=False)
    p_clean = float(logits[0, -1].float().softmax(-1)[answer])
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randn(samples, len(subject), model.cfg.d_model, generator=gen).to(model.device) * noise

    n_rows = 1 + L * T                                   # row 0: corrupted only; row 1 + l·T + t: restore (l, t)
    row_layer = torch.arange(L).repeat_interleave(T)     # (L·T,)
    row_pos = torch.arange(T).repeat(L)
    batch = tokens[None].expand(samples * n_rows, T)

    def corrupt(x):                                      # x: (samples·n_rows, T, d_model)
        x = x.clone().view(samples, n_rows, T, -1)
        x[:, :, subject] += draws[:, None]
        return x.view(samples * n_rows, T, -1)

    effects = {}
    for kind in kinds:
        hooks = {"hook_embed": corrupt}
        for l in range(L):
            lo = row_layer - (window // 2)               # restorations whose window covers layer l
            covers = (lo <= l) & (l < lo + window) if kind != "resid" else row_layer == l
            rows = 1 + covers.nonzero().squeeze(1)
            pos = row_pos[rows - 1]
            value = clean[f"blocks.{l}.{TRACE_HOOKS[kind]}"][0, pos]          # (n_restored, d_model)

            def restore(x, rows=rows, pos=pos, value=value):
                x = x.clone().view(samples, n_rows, T, -1)
                x[:, rows.to(x.device), pos.to(x.device)] = value
                return x.view(samples * n_rows, T, -1)
            hooks[f"blocks.{l}.{TRACE_HOOKS[kind]}"] = restore
        out = model.run_with_hooks(batch, hooks)[:, -1].float().softmax(-1)[:, answer].view(samples, n_rows).mean(0)
        effects[kind] = (out[1:] - out[0]).view(L, T).cpu()
        p_corrupted = float(out[0])
    model.train(was_training)
    return dict(p_clean=p_clean, p_corrupted=p_corrupted, effects=effects)


def indirect_effect(model: lm.GPT, prompt_tokens, subject_positions, answer: int, hook: str, position: int,
                    noise: Tensor) -> float:
    """The indirect effect of one hidden state, the quantity ``causal_trace`` computes for every
    state at once, written out for one: with ``noise`` (samples, n_subject, d_model) added to the
    token embeddings (``hook_embed``) at ``subject_positions``, the mean over the samples of

        p(answer | corrupted, activation ``hook`` at ``position`` restored to its clean value)
        − p(answer | corrupted),

    the probabilities read at the last position.  ``hook`` is a hook name, e.g.
    "blocks.2.hook_mlp_out"."""
    tokens = torch.as_tensor(list(prompt_tokens), dtype=torch.long)[None]
    subject = torch.as_tensor(list(subject_positions), dtype=torch.long)
    noise = torch.as_tensor(noise, dtype=torch.float32)
    if noise.dim() != 3 or noise.shape[1] != len(subject) or noise.shape[2] != model.cfg.d_model:
        raise ValueError(f"noise must be (samples, {len(subject)}, {model.cfg.d_model}), got {tuple(noise.shape)}")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, [hook], stop_early=False)
        batch = tokens.expand(len(noise), -1)

        def corrupt(x):
            x = x.clone()
            x[:, subject.to(x.device)] += noise.to(x.device)
            return x

        def restore(x):
            x = x.clone()
            x[:, position] = clean[hook][0, position]
            return x

        def p_answer(hooks) -> Tensor:
            return model.run_with_hooks(batch, hooks)[:, -1].float().softmax(-1)[:, answer]

        corrupted = p_answer({"hook_embed": corrupt})
        restored = p_answer({"hook_embed": corrupt, hook: restore})
    model.train(was_training)
    return float((restored - corrupted).mean())


TRACE_CATEGORIES = ("first subject", "middle subject", "last subject", "first after", "further after", "last")


def position_categories(length: int, first: int, last: int) -> list[int | None]:
    """For each position of a prompt, its index in ``TRACE_CATEGORIES`` (None before the subject):
    the paper's grouping, the last token taking precedence."""
    out: list[int | None] = []
    for t in range(length):
        if t == length - 1:
            out.append(5)
        elif t < first:
            out.append(None)
        elif t == first:
            out.append(0)
        elif t < last:
            out.append(1)
        elif t == last:
            out.append(2)
        else:
            out.append(3 if t == last + 1 else 4)
    return out


def average_trace(model: lm.GPT, prompts: FactPrompts, n: int = 100, samples: int = 10,
                  kinds=("resid", "mlp", "attn"), window: int = 1, seed: int = 0,
                  only_known: bool = True) -> dict:
    """``causal_trace`` averaged over up to n prompts, positions grouped into ``TRACE_CATEGORIES``.

    Prompts are drawn with ``seed``; with ``only_known`` only those the model answers correctly
    (top-1) are traced, as in the paper.  Returns dict(categories, n_prompts, p_clean,
    p_corrupted (means), effects {kind: (n_layers, 6) mean indirect effect per category},
    counts (6,) the number of prompts with each category).
    """
    if only_known:
        probs = answer_probabilities(model, prompts)
        known = (probs.argmax(-1) == prompts.answer).nonzero().squeeze(1)
        prompts = prompts.select(known)
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    L, C = model.cfg.n_layers, len(TRACE_CATEGORIES)
    sums = {k: torch.zeros(L, C) for k in kinds}
    counts = torch.zeros(C)
    p_clean = p_corrupted = 0.0
    noise = embedding_noise_scale(model)
    for j, i in enumerate(order):
        tokens = prompts.tokens[i]
        trace = causal_trace(model, tokens, prompts.subject_positions(i), int(prompts.answer[i]), noise=noise,
                             samples=samples, kinds=kinds, window=window, seed=seed + j)
        p_clean += trace["p_clean"]
        p_corrupted += trace["p_corrupted"]
        cats = position_categories(len(tokens), int(prompts.subject_first[i]), int(prompts.subject_last[i]))
        for c in range(C):
            where = [t for t, x in enumerate(cats) if x == c]
            if where:
                counts[c] += 1
                for k in kinds:
                    sums[k][:, c] += trace["effects"][k][:, where].mean(1)
    m = max(len(order), 1)
    return dict(categories=TRACE_CATEGORIES, n_prompts=len(order), p_clean=p_clean / m, p_corrupted=p_corrupted / m,
                effects={k: v / counts.clamp_min(1) for k, v in sums.items()}, counts=counts)


def format_trace(avg: dict, digits: int = 3) -> str:
    """The averaged indirect effects of ``average_trace`` as text tables, one per kind."""
    lines = [f"{avg['n_prompts']} prompts: p(clean) {avg['p_clean']:.3f}, p(corrupted) {avg['p_corrupted']:.3f}"]
    header = "layer  " + "  ".join(f"{c:>14}" for c in avg["categories"])
    for kind, grid in avg["effects"].items():
        lines += [f"[{kind}]", header]
        lines += [f"{l:>5}  " + "  ".join(f"{v:>14.{digits}f}" for v in row.tolist()) for l, row in enumerate(grid)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# For ROME
# --------------------------------------------------------------------------------------


@torch.no_grad()
def subject_key(model: lm.GPT, layer: int, prompts, subject_positions=None) -> Tensor:
    """ROME's key k: the MLP neurons of block ``layer`` after GELU (``blocks.{layer}.mlp.hook_post``,
    the input to the down-projection) at each prompt's last subject token.

    prompts: a ``FactPrompts`` (positions from it) or token-id lists with ``subject_positions``
    (n,) the last subject token of each.  Returns (n, d_mlp).
    """
    if subject_positions is None:
        if not isinstance(prompts, FactPrompts):
            raise ValueError("subject_positions are needed unless prompts is a FactPrompts")
        subject_positions = prompts.subject_last
    tokens_list = prompts.tokens if isinstance(prompts, FactPrompts) else [list(p) for p in prompts]
    positions = torch.as_tensor(subject_positions, dtype=torch.long)
    tokens, _ = _padded(tokens_list)
    name = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens, [name])
    return cache[name][torch.arange(len(positions)), positions.to(model.device)].float().cpu()


def mlp_output_weight(model: lm.GPT, layer: int) -> Tensor:
    """W_out of block ``layer``'s MLP, (d_model, d_mlp), in the column-vector convention v = W_out k.

    ``lm.MLP.c_proj`` is an ``nn.Linear(d_mlp, d_model)``, whose weight is stored (out, in) =
    (d_model, d_mlp) and applied as k @ weightᵀ + bias: so this is that parameter itself (edit it
    under ``torch.no_grad()`` to change the model; the bias is left out)."""
    return model.blocks[layer].mlp.c_proj.weight
