"""Unit tests for the trained sentiment model (models/sentiment_model.py, models/train_sentiment.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Never reach for the network: set before transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from models import LABELS, LexiconSentiment, ModelLoadError
from models.sentiment_model import (
    DEFAULT_ARTIFACT_DIR,
    DEFAULT_SENTIMENT_NAME,
    SentimentBatch,
    TransformerSentiment,
    infer_label_map,
    load_sentiment,
    packaged_base_path,
    probabilities_to_batch,
)
from tests.conftest import shared_file

CRASH = "Bitcoin crashes 20% as crypto lender collapses and liquidations pile up"
RALLY = "Bitcoin rallies to a new all-time high as institutional inflows surge"
NEUTRAL = "Kraken publishes its monthly market report"


@pytest.fixture(scope="module")
def shipped() -> TransformerSentiment:
    return TransformerSentiment(device="cpu")


# ---------------------------------------------------------------- the shipped model


def test_shipped_artifact_is_small_and_documented() -> None:
    files = {p.name: p.stat().st_size for p in DEFAULT_ARTIFACT_DIR.iterdir()}
    assert {"config.json", "adapter.safetensors", "README.md"} <= set(files)
    assert sum(files.values()) < 5 * 1024 * 1024
    readme = (DEFAULT_ARTIFACT_DIR / "README.md").read_text(encoding="utf-8")
    assert "10.1007/s10579-024-09743-x" in readme
    assert "python -m models.train_sentiment" in readme


def test_shipped_model_predicts_obvious_cases(shipped: TransformerSentiment) -> None:
    batch = shipped.predict([CRASH, RALLY, NEUTRAL, "Ethereum developers schedule the Merge for September"])
    assert batch.labels == ["negative", "positive", "neutral", "neutral"]
    assert batch.scores[0] < -0.5 < 0.5 < batch.scores[1]
    assert abs(batch.scores[2]) < 0.3
    assert shipped.name == DEFAULT_SENTIMENT_NAME


def test_shipped_model_shapes_ranges_and_order(shipped: TransformerSentiment) -> None:
    texts = [RALLY, "", "x" * 2000, CRASH, NEUTRAL, "ETH"]
    batch = shipped.predict(texts)
    assert isinstance(batch, SentimentBatch) and len(batch) == len(texts)
    assert batch.scores.dtype == np.float32 and batch.scores.shape == (len(texts),)
    assert batch.confidence.dtype == np.float32 and batch.confidence.shape == (len(texts),)
    assert np.all(np.abs(batch.scores) <= 1.0)
    assert np.all((batch.confidence >= 1 / 3 - 1e-6) & (batch.confidence <= 1.0))  # argmax of 3
    assert set(batch.labels) <= set(LABELS)
    # Order is kept although the model sorts by length internally.
    alone = shipped.predict([CRASH])
    np.testing.assert_allclose(alone.scores[0], batch.scores[3], atol=1e-5)
    # score = P(pos) - P(neg); confidence = P(label).
    probs = shipped.probabilities(texts)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch.scores, probs[:, 2] - probs[:, 0], atol=1e-5)
    np.testing.assert_allclose(batch.confidence, probs.max(axis=1), atol=1e-6)
    # score() keeps LexiconSentiment's protocol.
    scores, labels = shipped.score(texts)
    np.testing.assert_array_equal(scores, batch.scores)
    assert labels.shape == (len(texts),) and list(labels) == batch.labels


def test_shipped_model_empty_and_bad_inputs(shipped: TransformerSentiment) -> None:
    empty = shipped.predict([])
    assert len(empty) == 0 and empty.scores.shape == (0,) and empty.confidence.shape == (0,)
    with pytest.raises(TypeError, match="single str"):
        shipped.predict(CRASH)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        shipped.predict([CRASH, None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        TransformerSentiment(batch_size=0)
    with pytest.raises(ValueError, match="device"):
        TransformerSentiment(device="tpu")
    with pytest.raises(ModelLoadError, match=r"HF_HUB_OFFLINE|no such"):
        TransformerSentiment("no-such-org/no-such-sentiment-model")
    with pytest.raises(TypeError):
        load_sentiment(3)  # type: ignore[arg-type]


def test_load_sentiment_specs() -> None:
    assert isinstance(load_sentiment("lexicon"), LexiconSentiment)
    assert load_sentiment("vader-crypto").name == "vader+crypto"
    assert load_sentiment("vader").name == "vader"
    model = load_sentiment("default", device="cpu")
    assert isinstance(model, TransformerSentiment) and model.name == DEFAULT_SENTIMENT_NAME


def test_lexicon_predict_confidence() -> None:
    lex = LexiconSentiment()
    batch = lex.predict([CRASH, RALLY, "Coinbase schedules a meeting"])
    assert batch.labels == ["negative", "positive", "neutral"]
    scores, labels = lex.score([CRASH, RALLY, "Coinbase schedules a meeting"])
    np.testing.assert_array_equal(batch.scores, scores)
    assert batch.labels == list(labels)
    assert batch.confidence.dtype == np.float32
    assert np.all((batch.confidence >= 0) & (batch.confidence <= 1))
    assert batch.confidence[2] == pytest.approx(1.0)  # compound exactly 0: middle of the band
    # Deeper into a polar region = more confident.
    mild, strong = lex.predict(["Bitcoin rises", "Bitcoin soars to a record high in a huge rally"]).confidence
    assert strong > mild > 0


# ---------------------------------------------------------------- label mapping


@pytest.mark.parametrize(
    ("id2label", "expected"),
    [
        ({0: "negative", 1: "neutral", 2: "positive"}, ["negative", "neutral", "positive"]),
        ({0: "Bearish", 1: "Neutral", 2: "Bullish"}, ["negative", "neutral", "positive"]),
        ({0: "POS", 1: "NEG", 2: "NEU"}, ["positive", "negative", "neutral"]),
        ({0: "negative", 1: "positive"}, ["negative", "positive"]),
    ],
)
def test_infer_label_map(id2label: dict[int, str], expected: list[str]) -> None:
    mapping = infer_label_map(id2label)
    assert [mapping[i] for i in range(len(expected))] == expected


@pytest.mark.parametrize(
    "id2label",
    [
        {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"},
        {0: "negative", 1: "negative", 2: "positive"},
        {0: "neutral", 1: "positive"},
        {0: "1 star", 1: "2 stars", 2: "3 stars"},
    ],
)
def test_infer_label_map_refuses_to_guess(id2label: dict[int, str]) -> None:
    with pytest.raises(ValueError, match="label_map"):
        infer_label_map(id2label)


def test_two_class_probabilities_and_neutral_margin() -> None:
    probs = np.array([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8]])
    plain = probabilities_to_batch(probs, ["negative", "positive"])
    assert plain.labels == ["negative", "positive", "positive"]
    np.testing.assert_allclose(plain.scores, [-0.8, 0.1, 0.6], atol=1e-6)
    margin = probabilities_to_batch(probs, ["negative", "positive"], neutral_margin=0.2)
    assert margin.labels == ["negative", "neutral", "positive"]
    assert margin.confidence[1] == pytest.approx(0.5)


def _tiny_checkpoint(path: Path, id2label: dict[int, str]) -> Path:
    """A random, tiny BertForSequenceClassification with the packaged MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(str(packaged_base_path()), local_files_only=True)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def test_hf_checkpoint_label_mapping(tmp_path: Path) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "bullbear", {0: "Bullish", 1: "Bearish", 2: "Neutral"})
    model = load_sentiment(str(ckpt), device="cpu")
    assert isinstance(model, TransformerSentiment)
    assert model.class_labels == ["positive", "negative", "neutral"] and model.name == "bullbear"
    texts = [CRASH, RALLY, NEUTRAL]
    probs = model.probabilities(texts)
    batch = model.predict(texts)
    np.testing.assert_allclose(batch.scores, probs[:, 0] - probs[:, 1], atol=1e-5)
    expected = [["positive", "negative", "neutral"][int(i)] for i in probs.argmax(axis=1)]
    assert batch.labels == expected


def test_hf_checkpoint_generic_labels_need_label_map(tmp_path: Path) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(ModelLoadError, match="label_map"):
        TransformerSentiment(str(ckpt), device="cpu")
    model = TransformerSentiment(
        str(ckpt), device="cpu", label_map={0: "negative", 1: "neutral", 2: "positive"}
    )
    assert model.class_labels == ["negative", "neutral", "positive"]
    with pytest.raises(ValueError, match="no entry"):
        TransformerSentiment(str(ckpt), device="cpu", label_map={0: "negative", 2: "positive"})


def test_hf_two_class_checkpoint(tmp_path: Path) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "binary", {0: "NEG", 1: "POS"})
    texts = [CRASH, RALLY, NEUTRAL, "hello"]
    plain = TransformerSentiment(str(ckpt), device="cpu").predict(texts)
    assert "neutral" not in plain.labels
    # A random tiny model is unsure, so a wide margin turns everything neutral.
    wide = TransformerSentiment(str(ckpt), device="cpu", neutral_margin=0.99).predict(texts)
    assert wide.labels == ["neutral"] * len(texts)


# ---------------------------------------------------------------- training


def test_artifact_round_trip_and_weight_average(tmp_path: Path) -> None:
    """What the trainer saves, TransformerSentiment loads and scores the same (fp16 storage)."""
    from dataclasses import replace

    import torch

    from models.sentiment_model import save_artifact
    from models.train_sentiment import TrainConfig, predict_proba, train_model, weight_average

    texts = [
        CRASH,
        RALLY,
        NEUTRAL,
        "Exchange hacked, funds stolen",
        "ETF approved, Bitcoin jumps",
        "Block 700,000 mined",
    ]
    y = np.array([0, 2, 1, 0, 2, 1])
    cfg = replace(TrainConfig(), epochs=2, batch_size=3, lr=5e-3, head_lr=5e-3, threads=1)
    m1, tok = train_model(texts, y, cfg, seed=0)
    m2, _ = train_model(texts, y, cfg, seed=1)
    # The soup's LoRA update of a layer is the mean of the members' updates.
    name = "encoder.encoder.layer.0.attention.self.query"
    d1, d2 = (dict(m.named_modules())[name] for m in (m1, m2))
    expected = ((d1.lora_B @ d1.lora_A) + (d2.lora_B @ d2.lora_A)).detach() / 2
    soup = weight_average([m1, m2])
    got = dict(soup.named_modules())[name]
    torch.testing.assert_close((got.lora_B @ got.lora_A).detach(), expected, atol=1e-6, rtol=1e-4)

    out = tmp_path / "artifact"
    save_artifact(
        soup,
        out,
        {
            "lora_rank": cfg.lora_rank * 2,
            "lora_alpha": cfg.lora_alpha * 2,
            "lora_targets": cfg.lora_targets,
            "lora_layers": None,
            "lexicon_features": cfg.lexicon_features,
            "labels": list(LABELS),
            "name": "tiny",
        },
    )
    assert json.loads((out / "config.json").read_text())["format"].startswith("btcpulse-lora-sentiment")
    in_memory = predict_proba(soup, tok, texts)
    loaded = load_sentiment(str(out), device="cpu")
    assert isinstance(loaded, TransformerSentiment) and loaded.name == "tiny"
    np.testing.assert_allclose(loaded.probabilities(texts), in_memory, atol=2e-3)


def test_training_cv_on_a_subset_beats_chance(tmp_path: Path) -> None:
    """The training script end to end: 2-fold CV on 240 stratified rows, 4 epochs (< 60 s)."""
    from models.train_sentiment import main

    csv_path = shared_file("cryptolin_dev", "cryptolin_dev.csv")
    # Only the top layer adapted (backward through one layer) keeps this well under a minute on a
    # loaded 2-core machine; the shipped model adapts all six.
    args = "--cv 2 --subset 240 --epochs 4 --layers 5 --lr 3e-3 --head-lr 1e-2 --threads 1 --device cpu"
    rc = main(["--data", str(csv_path), "--out", str(tmp_path), *args.split()])
    assert rc == 0
    report = json.loads((tmp_path / "cv_report.json").read_text())
    assert report["n"] == 240 and report["folds"] == 2
    model = report["models"]["minilm-lora"]
    # Chance: always-majority gives macro-F1 ~0.23, uniform guessing ~0.32.
    assert model["macro_f1_mean"] > 0.40
    assert model["accuracy_mean"] > 0.50
    assert set(report["models"]) == {"minilm-lora", "vader", "vader+crypto"}


def test_training_is_deterministic_given_the_seed() -> None:
    from dataclasses import replace

    import torch

    from models.sentiment_model import trainable_state
    from models.train_sentiment import TrainConfig, train_model

    texts = [CRASH, RALLY, NEUTRAL, "Exchange hacked, funds stolen"]
    y = np.array([0, 2, 1, 0])
    cfg = replace(TrainConfig(), epochs=1, batch_size=2, lora_layers=[5], threads=1)
    a = trainable_state(train_model(texts, y, cfg, seed=3)[0])
    b = trainable_state(train_model(texts, y, cfg, seed=3)[0])
    c = trainable_state(train_model(texts, y, cfg, seed=4)[0])
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_shipped_cv_report_beats_vader_on_every_fold() -> None:
    """The committed 5-fold CV of the shipped configuration (``python -m models.train_sentiment
    --cv 5``): the fine-tuned model beats VADER and the crypto lexicon on each fold, and the report
    was made with the configuration the shipped adapter was trained with."""
    folder = Path(__file__).resolve().parents[2] / "models" / "artifacts" / "sentiment-cryptolin"
    report = json.loads((folder / "cv_report.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert report["folds"] == 5 and report["n"] == 1341
    assert {k: v for k, v in report["config"].items() if k != "threads"} == {
        k: v for k, v in config["train"].items() if k != "threads"
    }
    model, vader, lexicon = (report["models"][k] for k in ("minilm-lora", "vader", "vader+crypto"))
    for ours, theirs in zip(model["fold_macro_f1"], vader["fold_macro_f1"], strict=True):
        assert ours > theirs + 0.1
    for ours, theirs in zip(model["fold_macro_f1"], lexicon["fold_macro_f1"], strict=True):
        assert ours > theirs + 0.05


def test_onnx_backends_of_the_shipped_model_agree_with_torch() -> None:
    """fp32 ONNX gives torch's probabilities; int8 keeps the labels and the accuracy on the
    CryptoLin dev file (measured: 0.992 of the labels agree, accuracy 0.971 vs 0.973)."""
    from models.evaluate import compare_backends

    texts = ["Bitcoin surges to a record high as ETF inflows soar", "Exchange hacked, funds stolen"]
    torch_model = TransformerSentiment("", device="cpu")
    onnx_model = TransformerSentiment("", device="cpu", backend="onnx")
    np.testing.assert_allclose(onnx_model.probabilities(texts), torch_model.probabilities(texts), atol=1e-4)
    assert onnx_model.onnx_path is not None and onnx_model.onnx_path.exists()

    torch_row, int8_row = compare_backends(
        shared_file("cryptolin_dev", "cryptolin_dev.csv"), ["torch", "onnx-int8"]
    )
    assert int8_row["labels_agree_with_first"] >= 0.95
    assert int8_row["accuracy"] >= torch_row["accuracy"] - 0.01
    with pytest.raises(ValueError, match="unknown sentiment backend"):
        TransformerSentiment("", device="cpu", backend="tensorrt")


def test_auto_backend_is_int8_for_the_shipped_model_on_the_cpu_and_drops_torch_encoder() -> None:
    import torch

    auto = TransformerSentiment("", device="cpu", backend="auto")
    assert auto.backend == "onnx-int8"
    # the session holds the encoder; torch's copy is gone (only the head's weights are left)
    assert sum(p.numel() for p in auto._model.parameters()) < 10_000
    assert isinstance(auto._model.encoder, torch.nn.Identity)
    assert auto.predict(["Exchange hacked, funds stolen"]).labels == ["negative"]
    # one text per int8 pass: a text's probabilities do not depend on its batch-mates
    texts = ["Exchange hacked, funds stolen", "Bitcoin surges to a record high", "SEC delays ETF decision"]
    alone = np.vstack([auto.probabilities([t]) for t in texts])
    np.testing.assert_allclose(auto.probabilities(texts), alone, atol=1e-6)
