"""The image and text models (cnn, text_classifier): shapes, bad inputs, what travels."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from fedflower.errors import ConfigError
from fedflower.models import TokenIds, cnn, compile_model, text_classifier
from fedflower.steps import encoded
from fedflower.wire import arrays_for, model_record, variable_names

VOCABULARY = ("profit", "rose", "fell", "loss", "company")
SENTENCES = np.array([["Profit rose."], ["The loss fell"], ["unknown words only"]], dtype=np.str_)


def test_cnn_on_digit_images() -> None:
    model = cnn((8, 8, 1), 10)
    probs = np.asarray(model(np.zeros((4, 8, 8, 1), np.float32)))
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert [layer.name for layer in model.layers if "pool" in layer.name] == ["pool_0", "pool_1"]
    assert np.asarray(cnn((8, 8), 2)(np.zeros((1, 8, 8), np.float32))).shape == (1, 1)


def test_cnn_rejects_flat_input() -> None:
    with pytest.raises(ConfigError, match="model=cnn needs images"):
        cnn((7,), 2)


@pytest.mark.parametrize("encoder", ["pool", "conv", "lstm"])
def test_text_classifier_reads_strings(encoder: str) -> None:
    model = text_classifier((1,), 3, VOCABULARY, sequence_length=8, encoder=encoder)
    probs = np.asarray(model(encoded(model, SENTENCES)))  # strings, or their ids off TensorFlow
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TextVectorization's ids")
def test_token_ids_are_text_vectorization_ids() -> None:
    """What JAX and PyTorch feed the text model is what TensorFlow's model computes inside."""
    sentences = np.array([*SENTENCES, ["PROFIT, rose; (fell) company's loss-rose   x"], [""]])
    layer = keras.layers.TextVectorization(vocabulary=list(VOCABULARY), output_sequence_length=6)
    ids = TokenIds(VOCABULARY, 6)(sentences)
    np.testing.assert_array_equal(ids, np.asarray(layer(sentences)))
    assert ids[0].tolist() == [2, 3, 0, 0, 0, 0] and TokenIds(VOCABULARY, 6).size == 7


def test_text_classifier_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"model\.encoder must be one of pool, conv, lstm"):
        text_classifier((1,), 3, VOCABULARY, encoder="gru")
    with pytest.raises(ConfigError, match="model=text needs one string per example"):
        text_classifier((8, 8, 1), 3, VOCABULARY)


def test_only_weights_travel_and_the_vocabulary_is_rebuilt_identically(tmp_path: Path) -> None:
    """Server and client build the model from the same vocabulary; the weights that the engine
    serializes (Flower ArrayRecord) carry no vocabulary, and set on the other side give the same
    predictions on raw strings."""
    keras.utils.set_random_seed(1)
    sender = text_classifier((1,), 3, VOCABULARY)
    receiver = text_classifier((1,), 3, VOCABULARY)
    weights = sender.get_weights()
    assert weights[0].shape == (len(VOCABULARY) + 2, 32)  # padding + [UNK] + words
    assert all(np.issubdtype(w.dtype, np.floating) for w in weights)
    record = model_record(sender)
    receiver.set_weights(arrays_for(record, variable_names(receiver)))
    np.testing.assert_array_equal(np.asarray(receiver(SENTENCES)), np.asarray(sender(SENTENCES)))
    compile_model(sender, keras.optimizers.Adam(), 3)
    sender.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(np.asarray(loaded(SENTENCES)), np.asarray(sender(SENTENCES)))
