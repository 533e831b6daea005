"""ML models for btcpulse (no cluster, actor, serving or UI code here).

- :class:`Embedder` (``models.embedder``): sentence embeddings, default the packaged
  all-MiniLM-L6-v2 (384-d, L2-normalised, float32); torch, ONNX Runtime fp32 or int8 backends.
- ``models.batching``: batches bounded by items and padded tokens.
- :func:`load_sentiment` (``models.sentiment_model``): the shipped LoRA-tuned MiniLM classifier,
  the VADER + crypto lexicon (:class:`LexiconSentiment`), or any Hugging Face classifier;
  ``predict(texts) -> SentimentBatch(labels, scores in [-1, 1], confidence in [0, 1])``.
- :class:`Categorizer` (``models.categories``): multi-label categories from the shared embedding.
- :class:`OnlineTopicModel` (``models.topics``), :class:`StoryTracker` (``models.stories``),
  :class:`BurstDetector` (``models.bursts``): the stateful analyses, fed the same embeddings.
- :class:`Analyzer` (``models.pipeline``): embedder + sentiment + categories per batch, as the
  consumers and ``btcpulse analyze`` (``models.offline``) run them.
- :func:`pick_device` (``models.device``): ``"auto"`` -> CUDA when present, else CPU.

Heavy libraries load on first use; importing this package is cheap.
"""

from models.device import pick_device, torch_threads
from models.embedder import Embedder, ModelLoadError
from models.sentiment import LABELS, LexiconSentiment

__all__ = ["LABELS", "Embedder", "LexiconSentiment", "ModelLoadError", "pick_device", "torch_threads"]
