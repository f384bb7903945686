"""A generated corpus of financial-news sentences labelled negative, neutral or positive.

The sentences imitate the Financial PhraseBank's (Malo et al. 2014, arXiv:1307.5336): short
statements about fictional companies. They are built from word lists so that the label is a
property of the *words*, and no single word or position gives it away:

* a movement sentence pairs a metric with a direction: "sales rose" is positive but "costs rose"
  is negative, "losses narrowed" positive, "sales were flat" neutral; the model has to combine
  the metric's and the verb's meaning (a bag of words with one hidden layer can);
* an event sentence carries its sentiment in the event phrase ("won an order", "issued a profit
  warning", "appointed a new CFO"), drawn from per-class lists of synonyms;
* every sentence takes neutral filler (company, city, sector, amounts, periods, sources) in
  varied order, words are drawn with Zipf-like frequencies so some are rare, and a share
  ``label_noise`` of the labels is replaced by a random one (annotators disagree).

Everything is drawn from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("negative", "neutral", "positive")
NEGATIVE, NEUTRAL, POSITIVE = range(3)

COMPANIES = (
    "Norvex",
    "Altamira Holdings",
    "Kestrel Bank",
    "Brightwell",
    "Orlen Paper",
    "Tamarind Foods",
    "Vexa Telecom",
    "Halcyon Steel",
    "Pinecrest Insurance",
    "Lumo Energy",
    "Quarto Retail",
    "Sandvik Marine",
    "Elmstead Pharma",
    "Corvid Systems",
    "Nordhav Shipping",
    "Aurel Mining",
    "Glenbrook Media",
    "Ferrox",
    "Tidewater Logistics",
    "Solvane Chemicals",
    "Marrow Capital",
    "Ostara Biotech",
    "Helix Components",
    "Varden Construction",
    "Saltire Airlines",
)
CITIES = ("Helsinki", "Oslo", "Frankfurt", "London", "Stockholm", "Tallinn", "Zurich", "Milan")
SECTORS = ("paper", "steel", "software", "banking", "retail", "shipping", "mining", "telecom")
PERIODS = (
    "in the first quarter",
    "in the second quarter",
    "in the third quarter",
    "in 2009",
    "in the fourth quarter",
    "for the full year",
    "in January-June",
    "year-on-year",
)
SOURCES = (
    "the company said",
    "according to a statement",
    "it said on Tuesday",
    "the group reported",
    "the firm said in a release",
    "sources said",
)
GOOD_METRICS = (
    "net sales",
    "operating profit",
    "revenue",
    "net profit",
    "order intake",
    "operating margin",
    "earnings per share",
    "market share",
    "cash flow",
    "dividend",
)
BAD_METRICS = (
    "costs",
    "net loss",
    "debt",
    "operating loss",
    "customer churn",
    "inventory write-downs",
    "personnel expenses",
    "credit losses",
)
UP_VERBS = (
    "rose",
    "increased",
    "grew",
    "climbed",
    "jumped",
    "surged",
    "improved",
    "advanced",
    "widened",
    "soared",
    "expanded",
)
DOWN_VERBS = (
    "fell",
    "decreased",
    "declined",
    "dropped",
    "slumped",
    "narrowed",
    "shrank",
    "plunged",
    "slipped",
    "contracted",
    "tumbled",
)
FLAT_VERBS = (
    "was unchanged",
    "remained stable",
    "stayed flat",
    "was steady",
    "held level",
    "was in line with the previous year",
)
EVENTS = {
    POSITIVE: (
        "won an order worth {amount}",
        "signed a lucrative contract worth {amount}",
        "raised its outlook",
        "beat analysts' forecasts",
        "was upgraded by analysts",
        "secured new financing of {amount}",
        "reported record deliveries",
        "expanded its profitable service business",
        "agreed a takeover premium of {amount}",
    ),
    NEGATIVE: (
        "issued a profit warning",
        "lost a major customer worth {amount}",
        "announced layoffs",
        "was downgraded by analysts",
        "faces a lawsuit over {amount}",
        "recalled products worth {amount}",
        "missed its targets",
        "booked an impairment of {amount}",
        "halted production",
    ),
    NEUTRAL: (
        "will publish its interim report",
        "appointed a new chief financial officer",
        "held its annual general meeting",
        "moved its headquarters",
        "will hold a conference call",
        "signed a lease worth {amount}",
        "completed a share issue of {amount}",
        "renamed a unit",
        "published its agenda",
    ),
}
TAILS = ("", "on {date}", "{period}", "on {date}")
DATES = ("March 3", "April 28", "May 12", "August 6", "October 23", "November 4", "Monday")
PREFIXES = ("{source},", "In {city},", "", "")
SUFFIXES = (", {source}", ", the {sector} company based in {city} said", "")


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    """A word drawn with Zipf-like frequencies (the first words common, the last ones rare)."""
    weights = 1.0 / np.arange(1, len(words) + 1)
    return words[rng.choice(len(words), p=weights / weights.sum())]


def _frame(rng: np.random.Generator, clause: str) -> str:
    """``clause`` with a neutral prefix or suffix (source, city, sector), filled in."""
    text = (
        f"{_pick(rng, PREFIXES)} {clause}"
        if rng.random() < 0.5
        else f"{clause}{_pick(rng, SUFFIXES)}"
    )
    return text.format(
        source=_pick(rng, SOURCES),
        city=_pick(rng, CITIES),
        sector=_pick(rng, SECTORS),
        date=_pick(rng, DATES),
        period=_pick(rng, PERIODS),
        amount=f"EUR {rng.integers(2, 900)} million",
    )


def _movement(rng: np.random.Generator) -> tuple[str, int]:
    good = rng.random() < 0.6
    metric = _pick(rng, GOOD_METRICS if good else BAD_METRICS)
    move = int(rng.integers(3))
    verb = _pick(rng, (UP_VERBS, DOWN_VERBS, FLAT_VERBS)[move])
    label = NEUTRAL if move == 2 else POSITIVE if (move == 0) == good else NEGATIVE
    amount = "" if move == 2 else f"by {rng.integers(1, 60)} percent"
    return _frame(rng, f"{_pick(rng, COMPANIES)}'s {metric} {verb} {amount} {{period}}"), label


def _event(rng: np.random.Generator) -> tuple[str, int]:
    label = int(rng.choice(3, p=(0.25, 0.45, 0.30)))
    clause = f"{_pick(rng, COMPANIES)} {_pick(rng, EVENTS[label])} {_pick(rng, TAILS)}"
    return _frame(rng, clause), label


def generate(
    num_sentences: int = 3000, label_noise: float = 0.03, seed: int = 0
) -> tuple[list[str], list[int]]:
    """Generate ``num_sentences`` labelled sentences (half movements, half events).

    Parameters
    ----------
    num_sentences : int
        Corpus size.
    label_noise : float
        Share of labels replaced by a uniformly drawn label.
    seed : int
        Seed of the generator.
    """
    rng = np.random.default_rng(seed)
    sentences, labels = [], []
    for _ in range(num_sentences):
        text, label = (_movement if rng.random() < 0.5 else _event)(rng)
        if rng.random() < label_noise:
            label = int(rng.integers(3))
        sentences.append(" ".join(text.split()).replace(" ,", ",") + ".")
        labels.append(label)
    return sentences, labels
