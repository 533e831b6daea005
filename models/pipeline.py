"""The per-batch analyses, composed: one embedding pass feeds every model that can use it.

    texts --Embedder--> (n, dim) unit vectors --+--> Categorizer (vectors + keyword rules)
      |                                         +--> topic model, story tracker (stateful: their
      |                                              owners call them with these same vectors)
      +--sentiment model--> labels, scores, confidence

Sentiment reads the texts itself: the shipped model is a fine-tuned classifier whose weights
differ from the embedder's, so it cannot reuse the sentence vectors. Everything else does.

:class:`Analyzer` is what the analysis actors and ``btcpulse analyze`` both run, so the
offline output and the live stream come from the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from models.sentiment_model import SentimentBatch


@dataclass(frozen=True)
class TextAnalysis:
    """The stateless analyses of a batch; row ``i`` of everything belongs to ``texts[i]``."""

    vectors: np.ndarray  # (n, dim) float32, unit rows
    sentiment: SentimentBatch
    categories: list[dict[str, float]]  # per text: category -> score, best first


class Analyzer:
    """Embedder + sentiment + categories, loaded once (seconds), then :meth:`analyze` per batch.

    Args:
        embedding_model: ``""`` for the packaged all-MiniLM-L6-v2, else a path or model id.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        backend: embedding backend, ``"torch"``, ``"onnx"`` or ``"onnx-int8"``.
        sentiment_model: ``""`` (shipped model), ``"lexicon"``, or a Hugging Face model.
        sentiment_backend: the sentiment encoder's backend; ``None``: the embedder's.
        category_threshold: ``None`` for the categorizer's calibrated default.
        batch_size: texts per forward pass.
        max_tokens: padded tokens per forward pass (``None``: no token budget).
    """

    def __init__(
        self,
        *,
        embedding_model: str = "",
        device: str = "auto",
        backend: str = "torch",
        sentiment_model: str = "",
        category_threshold: float | None = None,
        batch_size: int = 32,
        max_tokens: int | None = None,
        sentiment_backend: str | None = None,
    ) -> None:
        from models.categories import Categorizer
        from models.embedder import Embedder
        from models.sentiment_model import load_sentiment

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.embedder = Embedder(embedding_model, device=device, backend=backend)
        self.sentiment = load_sentiment(sentiment_model, device=device, backend=sentiment_backend or backend)
        kwargs: dict[str, Any] = {} if category_threshold is None else {"threshold": category_threshold}
        self.categorizer = Categorizer(self.embedder, **kwargs)

    @property
    def name(self) -> str:
        """``"<embedder>+<sentiment>"``, recorded with every scored article."""
        return f"{self.embedder.name}+{self.sentiment.name}"

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def analyze(self, texts: list[str]) -> TextAnalysis:
        """Run every stateless model over ``texts`` (an empty list gives empty results)."""
        vectors = self.embedder.encode(texts, batch_size=self.batch_size, max_tokens=self.max_tokens)
        sentiment = self.sentiment.predict(texts)
        categories = self.categorizer.predict(texts, vectors) if texts else []
        return TextAnalysis(vectors=vectors, sentiment=sentiment, categories=categories)
