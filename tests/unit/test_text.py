"""Text data: the generated corpus, the shared vocabulary, the Hub/local loader, the text model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fedflower.data import news_corpus, text
from fedflower.data.text import TextSource
from fedflower.errors import DataError


@pytest.fixture(scope="module")
def news() -> TextSource:
    return text.financial_news()


def test_corpus_is_deterministic_by_seed() -> None:
    assert news_corpus.generate(50, seed=3) == news_corpus.generate(50, seed=3)
    assert news_corpus.generate(50, seed=3) != news_corpus.generate(50, seed=4)


def test_corpus_classes_are_balanced_enough_and_need_words(news: TextSource) -> None:
    shares = np.bincount(news.y, minlength=3) / len(news.y)
    assert shares.max() <= 0.45  # the majority class (neutral) is far from a free win
    assert shares.min() >= 0.25
    # the same verb carries opposite labels depending on the metric it moves
    sentences, labels = news_corpus.generate(3000, label_noise=0.0, seed=0)
    rose = {label for s, label in zip(sentences, labels, strict=True) if " rose by " in s}
    assert rose == {news_corpus.NEGATIVE, news_corpus.POSITIVE}


def test_splits_are_disjoint_and_stratified(news: TextSource) -> None:
    assert news.x.shape[1:] == (1,)
    assert len(news.y) + len(news.y_test) == 2700  # 3000 minus the 10 % public split
    assert len(news.y_test) == 600
    train = np.bincount(news.y) / len(news.y)
    test = np.bincount(news.y_test) / len(news.y_test)
    np.testing.assert_allclose(train, test, atol=0.01)
    assert news.class_names == ("negative", "neutral", "positive")


def test_vocabulary_comes_from_the_public_split_only() -> None:
    # every sentence has a word of its own: only the public split's own words may enter
    sentences = [f"word{i} {'good' if i % 2 else 'bad'} news" for i in range(200)]
    labels = [i % 2 for i in range(200)]
    source = text.from_sentences("t", sentences, labels, ("bad", "good"), vocabulary_size=1000)
    seen_by_clients = {s.split()[0] for s in source.x[:, 0]} | {
        s.split()[0] for s in source.x_test[:, 0]
    }
    own = {w for w in source.vocabulary if w.startswith("word")}
    assert len(own) == 20  # the 10 % public split
    assert not own & seen_by_clients
    assert {"good", "bad", "news"} <= set(source.vocabulary)


def test_vocabulary_is_most_frequent_first_and_capped() -> None:
    vocab = text.adapt_vocabulary(["b a, A!", "c b a", "d"], max_tokens=3)
    assert vocab == ("a", "b", "c")


def test_tokens_match_keras_text_vectorization(news: TextSource) -> None:
    import keras

    layer = keras.layers.TextVectorization()
    sample = [s for s in news.x[:200, 0]]
    layer.adapt(sample)
    keras_tokens = set(layer.get_vocabulary()[2:])  # without padding and [UNK]
    assert keras_tokens == {t for s in sample for t in text.tokens(s)}


def test_vocabulary_of_rejects_non_text(news: TextSource) -> None:
    assert text.vocabulary_of(news) == news.vocabulary
    from fedflower.data import digits

    with pytest.raises(DataError, match="needs a text dataset"):
        text.vocabulary_of(digits.load())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_sentences": 10},
        {"label_noise": 1.5},
        {"test_fraction": 0.0},
        {"public_fraction": 0.9},
        {"vocabulary_size": 0},
    ],
)
def test_bad_arguments_are_data_errors(kwargs: dict) -> None:
    with pytest.raises(DataError):
        text.financial_news(**kwargs)


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "sentiment"])
        writer.writerows(rows)
    return path


def test_hub_loader_reads_local_files(tmp_path: Path) -> None:
    rows = [
        (f"profit {'rose' if i % 2 else 'fell'} number {i}", "up" if i % 2 else "down")
        for i in range(100)
    ]
    path = write_csv(tmp_path / "news.csv", rows)
    source = text.hub("csv", text_column="sentence", label_column="sentiment", data_files=str(path))
    assert source.class_names == ("down", "up")
    assert len(source.y) + len(source.y_test) == 90
    assert {"profit", "rose", "fell"} <= set(source.vocabulary)
    row = source.x[0, 0]
    assert ("rose" in row) == (source.y[0] == 1)


def test_hub_loader_errors_are_data_errors(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "news.csv", [("a b", "x"), ("c d", "y")] * 20)
    with pytest.raises(DataError, match="no column"):
        text.hub("csv", text_column="text", label_column="sentiment", data_files=str(path))
    with pytest.raises(DataError, match="cannot load"):
        text.hub("csv", data_files=str(tmp_path / "missing.csv"))
