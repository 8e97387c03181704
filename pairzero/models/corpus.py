"""Generated pre-training corpus for opt-tiny: short reviews and notes about films, phones,
restaurants, hotels, books, laptops, concerts and games.

Documents have a coherent polarity (positive, negative or neutral), so the pre-trained LM
learns that sentiment words cluster, but the two verbalizer words of the built-in task
(``great``, ``terrible``) appear ONLY in polarity-neutral idioms ("a great many", "the
terrible twos") equally often in every kind of document. The pre-trained model therefore
encodes sentiment but does not map it onto the verbalizer: the task starts near chance and
ZO fine-tuning has to learn that mapping. Sentence frames differ from the task's templates,
and any sentence that equals a task example is dropped (checked by the tests).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from pairzero.tasks.lexicon import ADVERBS, DOMAINS, NAMES, REVIEWERS, polar_words

DEFAULT_SEED = 7
DEFAULT_DOCUMENTS = 6000

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_PLACES = ("the city", "the station", "the airport", "a market", "the old town", "the mall")

Frame = Callable[[random.Random, str, int], str]


def _aspect(rng: random.Random, domain: str) -> str:
    return rng.choice(DOMAINS[domain])


def _adj(rng: random.Random, label: int) -> str:
    return rng.choice(polar_words(label)[0])


# Polar frames: (rng, domain, label) -> sentence with the document's polarity.
_POLAR_FRAMES: tuple[Frame, ...] = (
    lambda r, d, y: f"We tried the {d} on {r.choice(_DAYS)}, and the {_aspect(r, d)} seemed {_adj(r, y)}.",
    lambda r, d, y: f"{r.choice(NAMES)} wrote that the {_aspect(r, d)} is {_adj(r, y)}.",
    lambda r, d, y: f"It was {r.choice(ADVERBS)} {_adj(r, y)}.",
    lambda r, d, y: f"It was {_adj(r, y)}.",
    lambda r, d, y: f"The {_aspect(r, d)} is {_adj(r, y)}. It was {_adj(r, y)}.",
    lambda r, d, y: f"Sadly or not, the {_aspect(r, d)} was {_adj(r, y)}. It was {_adj(r, y)} to me.",
    lambda r, d, y: f"{r.choice(NAMES)} said the {d} was {_adj(r, y)}. It was {_adj(r, y)} indeed.",
    lambda r, d, y: f"I {r.choice(polar_words(y)[1])} the {_aspect(r, d)}. It was {_adj(r, y)}.",
    lambda r, d, y: f"I would call the {_aspect(r, d)} {_adj(r, y)}.",
    lambda r, d, y: f"{r.choice(REVIEWERS).capitalize()} {r.choice(polar_words(y)[1])} it.",
    lambda r, d, y: f"Overall, a {_adj(r, y)} {d}.",
    lambda r, d, y: f"The {_aspect(r, d)} looked {_adj(r, y)} and the {_aspect(r, d)} sounded {_adj(r, y)}.",
    lambda r, d, y: f"What a {_adj(r, y)} {_aspect(r, d)}!",
    lambda r, d, y: f"My {d} has a {_adj(r, y)} {_aspect(r, d)}.",
    lambda r, d, y: f"In short, the {d} is {_adj(r, y)}.",
    lambda r, d, y: f"We {r.choice(polar_words(y)[1])} the {_aspect(r, d)} of this {d}.",
)

# Neutral frames; the only places where the verbalizer words occur, in both polarities alike.
_NEUTRAL_FRAMES: tuple[Frame, ...] = (
    lambda r, d, y: f"We bought the {d} in {r.choice(_PLACES)} on a {r.choice(_DAYS)}.",
    lambda r, d, y: f"The {_aspect(r, d)} of the {d} is described in the manual.",
    lambda r, d, y: f"It came with a great many {_aspect(r, d)} notes.",
    lambda r, d, y: f"There is a great deal of {_aspect(r, d)} talk online.",
    lambda r, d, y: f"{r.choice(NAMES)} has a child in the terrible twos.",
    lambda r, d, y: f"The story of the {d} is set in the terrible winter of {r.randint(1900, 1999)}.",
    lambda r, d, y: f"{r.choice(NAMES)} took it to {r.choice(_PLACES)}.",
    lambda r, d, y: f"It was {r.choice(_DAYS)} when the {d} arrived.",
)


def _document(rng: random.Random) -> str:
    domain = rng.choice(sorted(DOMAINS))
    kind = rng.choices(("pos", "neg", "neutral"), (45, 45, 10))[0]
    label = {"pos": 1, "neg": 0}.get(kind)
    sentences = [f"This is about a {domain}."] if rng.random() < 0.3 else []
    for _ in range(rng.randint(2, 4)):
        if label is None or rng.random() < 0.15:
            sentences.append(rng.choice(_NEUTRAL_FRAMES)(rng, domain, 0))
        else:
            sentences.append(rng.choice(_POLAR_FRAMES)(rng, domain, label))
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
