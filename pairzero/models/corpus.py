"""Generated pre-training corpus for opt-tiny: short reviews about films, phones, restaurants,
hotels, books, laptops, concerts and games, each carrying its sentiment to its END.

Design (why the built-in task is then learnable by zeroth-order fine-tuning):

* Most documents are a review-like sentence (direct, intensified, negated, reported, liking
  verbs, "but" contrasts, ...) followed by a same-polarity continuation: "It was wonderful.",
  "I felt happy.", "Overall: awful.", "So I would recommend it." / "So I would not recommend
  it.". Negation ("was not boring" is positive) and contrast (the clause after "but"
  decides) follow the same rules as the task's generator, so the LM learns to carry the
  sentence's polarity to the position after it, in particular after "It was".
* The verbalizer words of the task (``great``, ``terrible``) appear in natural polar contexts
  ("What a great film!", "What a terrible hotel!"), so their embedding rows carry polarity,
  and in polarity-neutral idioms ("a great many", "the terrible twos"). The only place where
  " great" follows "It was" is the neutral idiom "It was great-aunt <name> who ...", placed
  anywhere in positive and negative documents alike; " terrible" never follows "It was".
  The task's template + verbalizer pair thus never occurs as a sentiment statement, and the
  pre-trained model leans towards " great" after "It was" whatever the sentence says: zero-shot
  accuracy starts low and ZO fine-tuning has to learn to read the carried sentiment out onto
  " great"/" terrible".
* Any document containing a sentence that equals a task example is dropped (``exclude``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from pairzero.tasks.lexicon import ADVERBS, DOMAINS, NAMES, REVIEWERS, polar_words

DEFAULT_SEED = 7
DEFAULT_DOCUMENTS = 4000

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_PLACES = ("the city", "the station", "the airport", "a market", "the old town", "the mall")
_VERBALIZER = {1: "great", 0: "terrible"}
_FEELINGS = {
    1: ("happy", "glad", "pleased", "satisfied", "cheerful", "relieved"),
    0: ("sad", "upset", "angry", "annoyed", "unhappy", "cheated"),
}

Review = Callable[[random.Random, str, int], str]


def _aspect(rng: random.Random, domain: str) -> str:
    return rng.choice(DOMAINS[domain])


def _adj(rng: random.Random, label: int) -> str:
    return rng.choice(polar_words(label)[0])


def _verb(rng: random.Random, label: int) -> str:
    return rng.choice(polar_words(label)[1])


# Review sentences of polarity ``label`` (same rules as the task's templates, varied frames).
_REVIEWS: tuple[tuple[Review, int], ...] = (
    (lambda r, d, y: f"The {_aspect(r, d)} was {_adj(r, y)}.", 4),
    (lambda r, d, y: f"The {_aspect(r, d)} of this {d} is {r.choice(ADVERBS)} {_adj(r, y)}.", 3),
    (lambda r, d, y: f"The {_aspect(r, d)} is {_adj(r, y)}.", 2),
    (lambda r, d, y: f"The {_aspect(r, d)} was not {_adj(r, 1 - y)} at all.", 3),
    (lambda r, d, y: f"The {_aspect(r, d)} of this {d} was not {_adj(r, 1 - y)}.", 2),
    (lambda r, d, y: f"{r.choice(NAMES)} thought the {d} was {_adj(r, y)}.", 2),
    (lambda r, d, y: f"{r.choice(NAMES)} said the {_aspect(r, d)} was {r.choice(ADVERBS)} {_adj(r, y)}.", 1),
    (lambda r, d, y: f"I {_verb(r, y)} {r.choice((f'this {d}', f'the {_aspect(r, d)}'))}.", 2),
    (lambda r, d, y: f"We {_verb(r, y)} the {_aspect(r, d)} of this {d}.", 1),
    (lambda r, d, y: f"Honestly, {r.choice(REVIEWERS)} {_verb(r, y)} the {d} too.", 1),
    (lambda r, d, y: _contrast(r, d, y), 3),
    (lambda r, d, y: _both(r, d, y), 1),
)


def _contrast(rng: random.Random, domain: str, label: int) -> str:
    # The clause after "but" decides, as in the task; "not <opposite adjective>" carries it too.
    first, second = rng.sample(DOMAINS[domain], 2)
    u = rng.random()
    if u < 0.6:
        return f"The {first} was {_adj(rng, 1 - label)}, but the {second} was {_adj(rng, label)}."
    if u < 0.8:
        return f"The {first} was {_adj(rng, 1 - label)}, but the {second} was not {_adj(rng, 1 - label)}."
    return f"The {first} was not {_adj(rng, label)}, but the {second} was {_adj(rng, label)}."


def _both(rng: random.Random, domain: str, label: int) -> str:
    first, second = rng.sample(DOMAINS[domain], 2)
    a1, a2 = rng.sample(polar_words(label)[0], 2)
    return f"Both the {first} and the {second} felt {a1} and {a2}."


# Continuations that state the document's polarity after the review (never "It was great").
_ENDINGS: tuple[tuple[Review, int], ...] = (
    (lambda r, d, y: f"It was {_adj(r, y)}.", 6),
    (lambda r, d, y: f"It was {r.choice(ADVERBS)} {_adj(r, y)}.", 2),
    (lambda r, d, y: f"It was a {_adj(r, y)} {d}.", 2),
    (lambda r, d, y: f"I felt {r.choice(_FEELINGS[y])}.", 2),
    (lambda r, d, y: f"Overall: {_adj(r, y)}.", 2),
    (lambda r, d, y: "So I would recommend it." if y else "So I would not recommend it.", 2),
    (lambda r, d, y: f"What a {_VERBALIZER[y]} {d}!", 1),
)

# Polarity-neutral sentences (both verbalizer words also occur here, in idioms).
_NEUTRAL: tuple[Review, ...] = (
    lambda r, d, y: f"We bought the {d} in {r.choice(_PLACES)} on a {r.choice(_DAYS)}.",
    lambda r, d, y: f"The {_aspect(r, d)} of the {d} is described in the manual.",
    lambda r, d, y: f"It came with a great many {_aspect(r, d)} notes.",
    lambda r, d, y: f"It was great-aunt {r.choice(NAMES)} who found the {d}.",
    lambda r, d, y: f"It was great-uncle {r.choice(NAMES)} who paid for the {d}.",
    lambda r, d, y: f"There is a great deal of talk about the {_aspect(r, d)}.",
    lambda r, d, y: f"The story is set in the terrible winter of {r.randint(1900, 1999)}.",
    lambda r, d, y: f"{r.choice(NAMES)} has a child in the terrible twos.",
    lambda r, d, y: f"{r.choice(NAMES)} took it to {r.choice(_PLACES)}.",
    lambda r, d, y: f"It was {r.choice(_DAYS)} when the {d} arrived.",
)


def _pick(rng: random.Random, table: tuple[tuple[Review, int], ...]) -> Review:
    return rng.choices([f for f, _ in table], [w for _, w in table])[0]


def _document(rng: random.Random) -> str:
    domain = rng.choice(sorted(DOMAINS))
    label = rng.randint(0, 1)
    sentences = [f"This is about a {domain}."] if rng.random() < 0.2 else []
    # Each review is followed by one to three continuations of the same polarity: many
    # predictable polar tokens per document, which is what makes the LM carry the polarity.
    for _ in range(rng.choice((1, 2, 2))):
        sentences.append(_pick(rng, _REVIEWS)(rng, domain, label))
        for _ in range(rng.randint(1, 3)):
            sentences.append(_pick(rng, _ENDINGS)(rng, domain, label))
    if rng.random() < 0.3:  # a neutral sentence anywhere, also right after a review
        sentences.insert(rng.randint(0, len(sentences)), rng.choice(_NEUTRAL)(rng, domain, label))
    return " ".join(sentences)


def generate_corpus(
    n_documents: int = DEFAULT_DOCUMENTS, seed: int = DEFAULT_SEED, exclude: Iterable[str] = ()
) -> list[str]:
    """``n_documents`` one-line documents; sentences in ``exclude`` (task texts) never appear."""
    if n_documents < 1:
        raise ValueError(f"n_documents: {n_documents!r} must be >= 1")
    banned = set(exclude)
    rng = random.Random(seed)
    docs: list[str] = []
    while len(docs) < n_documents:
        doc = _document(rng)
        if not any(s in doc for s in banned):
            docs.append(doc)
    return docs
