"""The built-in topic task: 8-way review-topic classification, shipped as ``data/builtin_topic.jsonl``.

Regenerate (byte-identical for the same seed and the same shipped pre-training corpus)::

    .venv/bin/python -m pairzero.tasks.topic --out pairzero/tasks/data/builtin_topic.jsonl

Each example is one short review sentence about a film, restaurant, phone, hotel, book, laptop,
concert or game that never names the product: only an aspect of it ("The trackpad was ugly."
is about a laptop). Label i is the i-th topic of :data:`TOPICS`; the prompt is
``"{sentence} This is about a"`` (the pre-training corpus's own topic phrase) and the
verbalizer the eight topic nouns (one token each in opt-tiny's vocabulary).

Why it separates the methods where ``builtin-sentiment`` does not:

* eight classes (chance 0.125) instead of two, and the read-out to learn maps many aspects onto
  eight nouns, so federated ZO on the BitFit-style trainable set needs hundreds of rounds,
  and the noise an aggregation scheme adds shows in the curve instead of vanishing at 1.000;
* the start is fair: the pre-trained model links aspects to their product (the corpus follows
  reviews with "It was a <adjective> <product>."), and "This is about a" is the phrase the
  corpus uses to name a topic, so zero-shot accuracy is well above chance (about 0.35) and
  nothing in the corpus was written to mislead the prompt;
* aspects shared by two products (battery, keyboard, story) are never used, so every example
  has one correct answer; polar adjectives, negation and contrast are distractors only;
* no sentence of the task occurs verbatim in the shipped pre-training corpus
  (``exclude``), and no sentence occurs twice. Splits are balanced per topic.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from pairzero.tasks.builtin import write_jsonl
from pairzero.tasks.lexicon import ADVERBS, DOMAINS, NAMES, REVIEWERS, polar_words

DATA_PATH = Path(__file__).resolve().parent / "data" / "builtin_topic.jsonl"
CORPUS_PATH = Path(__file__).resolve().parent.parent / "models" / "assets" / "opt_tiny_corpus.txt"
DEFAULT_SEED = 20261203
DEFAULT_TRAIN = 1600
DEFAULT_VALIDATION = 400

#: Topics in label order (label i <-> verbalizer word " " + TOPICS[i]).
TOPICS: tuple[str, ...] = tuple(sorted(DOMAINS))
TEMPLATE = "{sentence} This is about a"
VERBALIZER: tuple[str, ...] = tuple(" " + t for t in TOPICS)

_COUNT = Counter(a for aspects in DOMAINS.values() for a in aspects)
#: Aspects of each topic that belong to no other topic (the answer is always unique).
UNIQUE_ASPECTS: dict[str, tuple[str, ...]] = {
    d: tuple(a for a in DOMAINS[d] if _COUNT[a] == 1) for d in TOPICS
}

#: Reviewers whose words name no aspect ("my boss" would read as the game's boss).
_REVIEWERS = tuple(r for r in REVIEWERS if not set(r.split()) & set(_COUNT))

Template = Callable[[random.Random, str], str]


def _adj(rng: random.Random) -> str:
    return rng.choice(polar_words(rng.randint(0, 1))[0])


def _verb(rng: random.Random) -> str:
    return rng.choice(polar_words(rng.randint(0, 1))[1])


def _aspect(rng: random.Random, topic: str) -> str:
    return rng.choice(UNIQUE_ASPECTS[topic])


def _two(rng: random.Random, topic: str) -> tuple[str, str]:
    a, b = rng.sample(UNIQUE_ASPECTS[topic], 2)
    return a, b


def _contrast(rng: random.Random, topic: str) -> str:
    a, b = _two(rng, topic)
    return f"The {a} was {_adj(rng)}, but the {b} was {_adj(rng)}."


def _both(rng: random.Random, topic: str) -> str:
    a, b = _two(rng, topic)
    return f"Both the {a} and the {b} felt {_adj(rng)} and {_adj(rng)}."


# (template, weight): one aspect in most sentences, two in a few; sentiment words are noise.
TEMPLATES: tuple[tuple[Template, int], ...] = (
    (lambda r, d: f"The {_aspect(r, d)} was {_adj(r)}.", 4),
    (lambda r, d: f"The {_aspect(r, d)} was {r.choice(ADVERBS)} {_adj(r)}.", 3),
    (lambda r, d: f"The {_aspect(r, d)} was not {_adj(r)} at all.", 2),
    (lambda r, d: f"{r.choice(NAMES)} said the {_aspect(r, d)} was {_adj(r)}.", 2),
    (lambda r, d: f"I {_verb(r)} the {_aspect(r, d)}.", 2),
    (_contrast, 2),
    (_both, 1),
    (lambda r, d: f"Honestly, {r.choice(_REVIEWERS)} {_verb(r)} the {_aspect(r, d)} too.", 1),
)


def generate_topic_examples(
    n_train: int = DEFAULT_TRAIN,
    n_validation: int = DEFAULT_VALIDATION,
    seed: int = DEFAULT_SEED,
    exclude_text: str | None = None,
) -> list[dict[str, object]]:
    """Balanced, duplicate-free examples as dicts ``{"split", "text", "label"}``.

    ``n_train`` and ``n_validation`` must be multiples of the number of topics (8).
    ``exclude_text``: sentences occurring in it are skipped (default: the shipped
    pre-training corpus of opt-tiny, so no task sentence was seen in pre-training).
    """
    n_topics = len(TOPICS)
    for key, value in (("n_train", n_train), ("n_validation", n_validation)):
        if value < n_topics or value % n_topics:
            raise ValueError(f"{key}: {value!r} must be a positive multiple of {n_topics} (balanced topics)")
    if exclude_text is None:
        exclude_text = CORPUS_PATH.read_text(encoding="utf-8")
    rng = random.Random(seed)
    templates = [t for t, _ in TEMPLATES]
    weights = [w for _, w in TEMPLATES]
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    for split, count in (("train", n_train), ("validation", n_validation)):
        split_rows: list[dict[str, object]] = []
        for label, topic in enumerate(TOPICS):
            made = 0
            while made < count // n_topics:
                text = rng.choices(templates, weights)[0](rng, topic)
                if text in seen or text in exclude_text:
                    continue
                seen.add(text)
                split_rows.append({"split": split, "text": text, "label": label})
                made += 1
        rng.shuffle(split_rows)
        rows.extend(split_rows)
    return rows


def topic_of(text: str) -> set[str]:
    """Topics whose unique aspects occur in ``text`` (a consistency check: always one)."""
    words = set(text.replace(",", " ").replace(".", " ").split())
    return {d for d in TOPICS if words & set(UNIQUE_ASPECTS[d])}


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_PATH)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--train", type=int, default=DEFAULT_TRAIN)
    parser.add_argument("--validation", type=int, default=DEFAULT_VALIDATION)
    args = parser.parse_args(None if argv is None else list(argv))
    write_jsonl(generate_topic_examples(args.train, args.validation, args.seed), args.out)


if __name__ == "__main__":
    main()
