"""The built-in sentiment task: generated reproducibly, shipped as ``data/builtin_sentiment.jsonl``.

Regenerate (byte-identical for the same seed)::

    .venv/bin/python -m pairzero.tasks.builtin --out pairzero/tasks/data/builtin_sentiment.jsonl

Each example is one short review sentence with label 0 (negative, verbalizer " terrible") or
1 (positive, " great"). Templates mix direct statements, intensifiers, negation ("was not
boring" is positive), reported opinions, verbs of liking, and contrast clauses where the
clause after "but" decides the label, so the task is learnable but not a keyword lookup.
Splits are balanced per label and no sentence appears twice.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

from pairzero.tasks.lexicon import ADVERBS, DOMAINS, NAMES, REVIEWERS, polar_words

DATA_PATH = Path(__file__).resolve().parent / "data" / "builtin_sentiment.jsonl"
DEFAULT_SEED = 20240607
DEFAULT_TRAIN = 600
DEFAULT_VALIDATION = 200

Template = Callable[[random.Random, int], str]


def _aspect(rng: random.Random) -> tuple[str, str]:
    domain = rng.choice(sorted(DOMAINS))
    return domain, rng.choice(DOMAINS[domain])


def _direct(rng: random.Random, label: int) -> str:
    _, aspect = _aspect(rng)
    adj = rng.choice(polar_words(label)[0])
    return f"The {aspect} was {adj}."


def _intensified(rng: random.Random, label: int) -> str:
    domain, aspect = _aspect(rng)
    adj = rng.choice(polar_words(label)[0])
    return f"The {aspect} of this {domain} is {rng.choice(ADVERBS)} {adj}."


def _negated(rng: random.Random, label: int) -> str:
    # "not <adjective of the opposite polarity>" carries the label.
    _, aspect = _aspect(rng)
    adj = rng.choice(polar_words(1 - label)[0])
    return f"The {aspect} was not {adj} at all."


def _reported(rng: random.Random, label: int) -> str:
    domain, _ = _aspect(rng)
    adj = rng.choice(polar_words(label)[0])
    who = rng.choice(NAMES)
    return f"{who} thought the {domain} was {adj}."


def _verb(rng: random.Random, label: int) -> str:
    domain, aspect = _aspect(rng)
    verb = rng.choice(polar_words(label)[1])
    thing = rng.choice((f"this {domain}", f"the {aspect}"))
    return f"I {verb} {thing}."


def _contrast(rng: random.Random, label: int) -> str:
    # The clause after "but" decides; the first clause has the opposite polarity.
    domain = rng.choice(sorted(DOMAINS))
    first, second = rng.sample(DOMAINS[domain], 2)
    adj1 = rng.choice(polar_words(1 - label)[0])
    adj2 = rng.choice(polar_words(label)[0])
    return f"The {first} was {adj1}, but the {second} was {adj2}."


def _double(rng: random.Random, label: int) -> str:
    domain = rng.choice(sorted(DOMAINS))
    first, second = rng.sample(DOMAINS[domain], 2)
    adj1, adj2 = rng.sample(polar_words(label)[0], 2)
    return f"Both the {first} and the {second} felt {adj1} and {adj2}."


def _friend(rng: random.Random, label: int) -> str:
    domain, _ = _aspect(rng)
    verb = rng.choice(polar_words(label)[1])
    return f"Honestly, {rng.choice(REVIEWERS)} {verb} the {domain} too."


# (template, weight): negation and contrast are a minority, as in real reviews.
TEMPLATES: tuple[tuple[Template, int], ...] = (
    (_direct, 4),
    (_intensified, 3),
    (_negated, 2),
    (_reported, 2),
    (_verb, 2),
    (_contrast, 1),
    (_double, 1),
    (_friend, 1),
)


def generate_sentiment_examples(
    n_train: int = DEFAULT_TRAIN, n_validation: int = DEFAULT_VALIDATION, seed: int = DEFAULT_SEED
) -> list[dict[str, object]]:
    """Balanced, duplicate-free examples as dicts ``{"split", "text", "label"}``.

    ``n_train`` and ``n_validation`` must be even (half per label).
    """
    for key, value in (("n_train", n_train), ("n_validation", n_validation)):
        if value < 2 or value % 2:
            raise ValueError(f"{key}: {value!r} must be an even integer >= 2 (balanced labels)")
    rng = random.Random(seed)
    templates = [t for t, _ in TEMPLATES]
    weights = [w for _, w in TEMPLATES]
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    for split, count in (("train", n_train), ("validation", n_validation)):
        split_rows: list[dict[str, object]] = []
        for label in (0, 1):
            made = 0
            while made < count // 2:
                text = rng.choices(templates, weights)[0](rng, label)
                if text in seen:
                    continue
                seen.add(text)
                split_rows.append({"split": split, "text": text, "label": label})
                made += 1
        rng.shuffle(split_rows)
        rows.extend(split_rows)
    return rows


def write_jsonl(rows: list[dict[str, object]], path: Path) -> None:
    """One JSON object per line, keys sorted, so the file is byte-reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_PATH)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--train", type=int, default=DEFAULT_TRAIN)
    parser.add_argument("--validation", type=int, default=DEFAULT_VALIDATION)
    args = parser.parse_args(argv)
    write_jsonl(generate_sentiment_examples(args.train, args.validation, args.seed), args.out)


if __name__ == "__main__":
    main()
