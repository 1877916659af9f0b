"""A seeded, learnable stand-in for stock-headline sentiment (3 labels), for tests and demos.

Each headline is a company, a phrase whose wording carries the label, and neutral filler drawn
from the same pool for every label. A share of "despite X, Y" headlines (the label is the main
clause's) and a little label noise keep a bag-of-words from being perfect; a tiny BERT reaches
well above chance (1/3) within a few seconds on CPU. Same seed and size, same data, byte for byte.
"""

from __future__ import annotations

import random

LABEL_NAMES = ("negative", "neutral", "positive")

_COMPANIES = (
    "Acme Corp", "Globex", "Initech", "Umbrella Holdings", "Stark Industries", "Wayne Enterprises",
    "Hooli", "Soylent", "Cyberdyne", "Tyrell", "Wonka Foods", "Oscorp", "Vandelay Imports",
    "Pied Piper", "Monarch Airlines", "Gringotts Bank", "Dunder Mifflin", "Aperture Labs",
    "Nakatomi Trading", "Blue Sun", "Massive Dynamic", "Prestige Worldwide", "Sterling Cooper",
    "Virtucon", "Bluth Company", "Krusty Brands", "Gekko Partners", "Octan Energy",
)
_PHRASES = {
    "negative": (
        "shares plunge", "misses earnings estimates", "cuts full-year guidance", "faces regulatory probe",
        "downgraded to sell", "reports widening loss", "stock tumbles", "suspends its dividend",
        "announces mass layoffs", "slides after weak sales", "warns of falling demand", "loses key contract",
        "hit by product recall", "posts disappointing revenue",
    ),
    "neutral": (
        "to report earnings next week", "holds annual shareholder meeting", "names new finance chief",
        "shares little changed", "files quarterly report", "schedules investor call", "trades flat",
        "completes previously announced merger", "updates board composition", "moves headquarters",
        "keeps guidance unchanged", "confirms conference date", "rebrands retail unit", "renews credit line",
    ),
    "positive": (
        "shares surge", "beats earnings estimates", "raises full-year guidance", "wins major contract",
        "upgraded to buy", "posts record revenue", "stock rallies", "boosts its dividend",
        "expands profit margins", "jumps after strong sales", "sees booming demand", "secures new partnership",
        "beats analyst forecasts", "hits all-time high",
    ),
}
_PREFIXES = ("", "", "", "breaking:", "update:", "market wrap:", "analysts say", "report:")
_SUFFIXES = (
    "", "", "", "in early trading", "on Monday", "on Thursday", "amid market volatility",
    "as investors watch rates", "ahead of the open", "according to sources", "this quarter",
)


def synthetic_examples(n: int, seed: int, *, contrast_share: float = 0.15,
                       noise_share: float = 0.03) -> list[tuple[str, int]]:
    """``n`` (text, label id) pairs; labels index ``LABEL_NAMES``. Purely computational."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        label = rng.randrange(len(LABEL_NAMES))
        text = _headline(rng, label, contrast=rng.random() < contrast_share)
        if rng.random() < noise_share:
            label = rng.randrange(len(LABEL_NAMES))
        examples.append((text, label))
    return examples


def synthetic_splits(n: int, seed: int) -> dict[str, list[tuple[str, int]]]:
    """80/10/10 train/validation/test split of ``synthetic_examples(n, seed)``."""
    examples = synthetic_examples(n, seed)
    n_eval = max(n // 10, 1)
    n_train = n - 2 * n_eval
    return {
        "train": examples[:n_train],
        "validation": examples[n_train:n_train + n_eval],
        "test": examples[n_train + n_eval:],
    }


def _headline(rng: random.Random, label: int, *, contrast: bool) -> str:
    company = rng.choice(_COMPANIES)
    ticker = "$" + "".join(ch for ch in company.upper() if ch.isalpha())[:4]
    phrase = rng.choice(_PHRASES[LABEL_NAMES[label]])
    parts = [rng.choice(_PREFIXES), rng.choice((company, ticker, company)), phrase, rng.choice(_SUFFIXES)]
    if contrast:
        other = rng.choice([name for name in LABEL_NAMES if name != LABEL_NAMES[label]])
        parts.insert(0, f"despite news it {rng.choice(_PHRASES[other])},")
    return " ".join(part for part in parts if part)
