"""Shared word lists for the generated sentiment task and the opt-tiny pre-training corpus.

Both generators draw from these lists so that the tiny tokenizer covers the task's words.
The verbalizer words (``great``, ``terrible``) are deliberately NOT in the polar adjective
lists: the pre-training corpus uses them only in polarity-neutral idioms, so the pre-trained
model does not solve the task zero-shot and zeroth-order fine-tuning has something to learn.
"""

from __future__ import annotations

# Subjects grouped by domain: (domain noun used in "this <domain>", aspects of it).
DOMAINS: dict[str, tuple[str, ...]] = {
    "film": ("plot", "acting", "ending", "soundtrack", "script", "cast", "pacing", "dialogue"),
    "restaurant": ("food", "service", "soup", "dessert", "staff", "menu", "pasta", "coffee"),
    "phone": ("battery", "screen", "camera", "speaker", "charger", "keyboard", "case", "app"),
    "hotel": ("room", "bed", "view", "breakfast", "pool", "lobby", "shower", "location"),
    "book": ("story", "writing", "characters", "chapters", "cover", "translation", "prose", "hero"),
    "laptop": ("display", "trackpad", "fan", "hinge", "battery", "keyboard", "webcam", "ports"),
    "concert": ("band", "singer", "sound", "crowd", "venue", "encore", "drummer", "lights"),
    "game": ("graphics", "controls", "levels", "music", "puzzles", "story", "boss", "menus"),
}

POSITIVE_ADJECTIVES: tuple[str, ...] = (
    "wonderful", "excellent", "superb", "lovely", "brilliant", "fantastic", "delightful",
    "amazing", "enjoyable", "charming", "pleasant", "perfect", "impressive", "good", "nice",
    "beautiful", "fun", "clever", "fresh", "smooth",
)
NEGATIVE_ADJECTIVES: tuple[str, ...] = (
    "awful", "dreadful", "horrible", "poor", "boring", "disappointing", "bad", "dull", "weak",
    "annoying", "broken", "ugly", "slow", "bland", "mediocre", "painful", "messy", "cheap",
    "rude", "useless",
)
POSITIVE_VERBS: tuple[str, ...] = ("loved", "enjoyed", "liked", "adored", "recommend", "admired")
NEGATIVE_VERBS: tuple[str, ...] = ("hated", "disliked", "regretted", "loathed", "returned", "avoided")
ADVERBS: tuple[str, ...] = ("really", "very", "quite", "truly", "rather", "absolutely", "so", "pretty")
NAMES: tuple[str, ...] = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Kira", "Luis", "Maya", "Noah", "Olga", "Pavel",
)
REVIEWERS: tuple[str, ...] = ("my friend", "my sister", "my brother", "the critic", "my boss", "a neighbour")


def polar_words(label: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adjectives, verbs) of polarity ``label`` (0 negative, 1 positive)."""
    if label not in (0, 1):
        raise ValueError(f"label: {label!r} is not one of 0 (negative), 1 (positive)")
    return (POSITIVE_ADJECTIVES, POSITIVE_VERBS) if label == 1 else (NEGATIVE_ADJECTIVES, NEGATIVE_VERBS)
