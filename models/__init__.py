"""ML models for btcpulse (no cluster, actor, serving or UI code here).

- :class:`Embedder` (``models.embedder``): sentence embeddings, default the packaged
  all-MiniLM-L6-v2 (384-d, L2-normalised, float32).
- :class:`LexiconSentiment` (``models.sentiment``): VADER plus a crypto/markets lexicon;
  ``score(texts) -> (scores in [-1, 1], labels in LABELS)``.
- :func:`pick_device` (``models.device``): ``"auto"`` -> CUDA when present, else CPU.
- ``models.evaluate``: macro-F1/accuracy of the sentiment scorers on a labelled CSV.

Each model takes a batch (``list[str]``) and returns numpy arrays.
"""

from models.device import pick_device, torch_threads
from models.embedder import Embedder, ModelLoadError
from models.sentiment import LABELS, LexiconSentiment

__all__ = ["LABELS", "Embedder", "LexiconSentiment", "ModelLoadError", "pick_device", "torch_threads"]
