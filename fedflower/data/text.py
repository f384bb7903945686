"""Sentence classification data: one string per example, a shared vocabulary, a central test split.

Two sources give a :class:`TextSource`:

* :func:`financial_news`: a generated corpus of financial-news sentences labelled negative /
  neutral / positive (the task of the Financial PhraseBank, Malo et al. 2014, arXiv:1307.5336),
  built offline from word lists by :mod:`fedflower.data.news_corpus`;
* :func:`hub`: any labelled corpus Hugging Face ``datasets`` can load (a Hub name, which needs
  the network, or a local ``csv``/``json``/``parquet`` file through ``data_files``).

The vocabulary. Token ids must mean the same on every client and on the server, so all of
them build ``TextVectorization`` with one fixed vocabulary. It is adapted on a *public split*
of the corpus that no client trains on and the test set does not contain (the role a public
pre-training corpus plays in practice): no client's raw text, nor its word counts, leave the
client. Adapting on each client's own text would give each client different ids for the same
word; adapting on the union of the clients' text would send their text to the server; counting
words across clients (federated heavy hitters) would still reveal which rare words a client
uses. Words that occur only in client data map to the out-of-vocabulary id.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from fedflower.checks import check_number
from fedflower.data import news_corpus
from fedflower.data.source import TabularSource
from fedflower.errors import DataError

_PUNCTUATION = re.compile(r"""[!"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~']""")
"""What Keras' ``TextVectorization`` strips under ``standardize="lower_and_strip_punctuation"``."""


@dataclass(frozen=True)
class TextSource(TabularSource):
    """A :class:`TabularSource` whose examples are sentences (``x`` of shape ``(n, 1)``, str).

    Parameters
    ----------
    vocabulary : tuple of str
        The shared vocabulary, most frequent first, adapted on the public split.
    class_names : tuple of str
        Name of each label.
    text_column, label_column : str, optional
        The columns of a table the sentences and labels come from
        (:func:`fedflower.data.files.text_table`).
    """

    vocabulary: tuple[str, ...] = ()
    class_names: tuple[str, ...] = field(default=())
    text_column: str | None = None
    label_column: str | None = None

    def table_meta(self) -> dict[str, Any] | None:
        """What a model of a table's text column stores for ``fedflower predict`` (or None)."""
        if self.text_column is None:
            return None
        return {
            "text": self.text_column,
            "numeric": [],
            "categorical": [],
            "label": self.label_column,
            "class_names": list(self.class_names),
        }


def tokens(sentence: str) -> list[str]:
    """Split ``sentence`` the way Keras' ``TextVectorization`` does by default."""
    return _PUNCTUATION.sub("", sentence.lower()).split()


def adapt_vocabulary(sentences: Sequence[str], max_tokens: int) -> tuple[str, ...]:
    """The ``max_tokens`` most frequent tokens of ``sentences`` (ties in alphabetical order)."""
    counts = Counter(t for s in sentences for t in tokens(s))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(token for token, _ in ranked[:max_tokens])


def vocabulary_of(source: TabularSource) -> tuple[str, ...]:
    """The shared vocabulary of a text dataset (the text model's ``vocabulary``)."""
    if not isinstance(source, TextSource):
        raise DataError(f"model=text needs a text dataset, got {source.name}")
    return source.vocabulary


def _fraction(key: str, value: float, most: float) -> None:
    check_number(
        key, value, minimum=0.0, maximum=most, min_open=True, max_open=True, error=DataError
    )


def from_sentences(
    name: str,
    sentences: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    *,
    test_fraction: float = 0.2,
    public_fraction: float = 0.1,
    vocabulary_size: int = 2000,
    seed: int = 0,
) -> TextSource:
    """Split a labelled corpus into public (vocabulary), test and training parts, stratified.

    Parameters
    ----------
    name : str
        Name of the dataset in messages and results.
    sentences, labels : sequence
        The corpus; labels are integers in ``[0, len(class_names))``.
    class_names : sequence of str
        Name of each label.
    test_fraction : float
        Share of the corpus held out as the central test set.
    public_fraction : float
        Share of the corpus the vocabulary is adapted on; no client trains on it.
    vocabulary_size : int
        Largest number of tokens in the vocabulary.
    seed : int
        Seed of the splits.
    """
    _fraction("dataset.test_fraction", test_fraction, 1.0)
    _fraction("dataset.public_fraction", public_fraction, 1.0 - test_fraction)  # the rest trains
    check_number("dataset.vocabulary_size", vocabulary_size, minimum=1, error=DataError)
    x = np.asarray(sentences, dtype=np.str_).reshape(-1, 1)
    y = np.asarray(labels, dtype=np.int64)
    try:
        rest_x, public_x, rest_y, _ = train_test_split(
            x, y, test_size=public_fraction, stratify=y, random_state=seed
        )
        x_train, x_test, y_train, y_test = train_test_split(
            rest_x,
            rest_y,
            test_size=test_fraction / (1 - public_fraction),
            stratify=rest_y,
            random_state=seed,
        )
    except ValueError as exc:
        raise DataError(f"{name}: cannot split {len(y)} sentences: {exc}") from exc
    return TextSource(
        name=name,
        x=x_train,
        y=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(class_names),
        vocabulary=adapt_vocabulary(public_x[:, 0].tolist(), vocabulary_size),
        class_names=tuple(class_names),
    )


@lru_cache(maxsize=4)
def financial_news(
    num_sentences: int = 3000,
    label_noise: float = 0.03,
    seed: int = 0,
    **options: Any,
) -> TextSource:
    """The generated financial-news sentiment corpus (see :mod:`fedflower.data.news_corpus`).

    Parameters
    ----------
    num_sentences : int
        Corpus size before the splits.
    label_noise : float
        Share of labels replaced by a random one.
    seed : int
        Seed of the generator and of the splits.
    **options
        ``test_fraction``, ``public_fraction``, ``vocabulary_size`` of :func:`from_sentences`.
    """
    check_number("dataset.num_sentences", num_sentences, minimum=30, error=DataError)
    check_number("dataset.label_noise", label_noise, minimum=0, maximum=1, error=DataError)
    sentences, labels = news_corpus.generate(num_sentences, label_noise, seed)
    return from_sentences(
        "financial_news", sentences, labels, news_corpus.CLASS_NAMES, seed=seed, **options
    )


def hub(
    path: str,
    text_column: str = "text",
    label_column: str = "label",
    split: str = "train",
    data_files: Any = None,
    seed: int = 0,
    **options: Any,
) -> TextSource:
    """A labelled corpus loaded with Hugging Face ``datasets.load_dataset``.

    A Hub name (e.g. ``zeroshot/twitter-financial-news-sentiment``) needs the network the first
    time and is cached afterwards; ``path="csv"`` (or ``json``, ``parquet``) with ``data_files``
    reads local files. Integer labels are kept (their names from the column's ``ClassLabel``
    when it has one); string labels are numbered in sorted order.

    Parameters
    ----------
    path : str
        Dataset name or builder, as for ``datasets.load_dataset``.
    text_column, label_column : str
        Columns holding the sentence and its label.
    split : str
        Split to load; it is then divided into public, test and training parts.
    data_files : str, list or dict, optional
        Local files for a ``csv``/``json``/``parquet`` builder.
    seed : int
        Seed of the splits.
    **options
        ``test_fraction``, ``public_fraction``, ``vocabulary_size`` of :func:`from_sentences`.
    """
    import datasets

    try:
        corpus = datasets.load_dataset(path, data_files=data_files, split=split)
    except Exception as exc:
        raise DataError(f"text_hub: cannot load {path!r} (split {split!r}): {exc}") from exc
    missing = {text_column, label_column} - set(corpus.column_names)
    if missing:
        raise DataError(
            f"text_hub: {path!r} has no column {sorted(missing)}; columns: {corpus.column_names} "
            "(set dataset.text_column / dataset.label_column)"
        )
    feature = corpus.features[label_column]
    raw = corpus[label_column]
    if isinstance(feature, datasets.ClassLabel):
        labels, names = list(raw), list(feature.names)
    elif all(isinstance(v, int | np.integer) for v in raw):
        labels, names = list(raw), [str(i) for i in range(max(raw) + 1)]
    else:
        names = sorted({str(v) for v in raw})
        labels = [names.index(str(v)) for v in raw]
    sentences = [str(s) for s in corpus[text_column]]
    return from_sentences(f"text_hub({path})", sentences, labels, names, seed=seed, **options)
