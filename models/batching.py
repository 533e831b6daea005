"""Token-budget batching: split texts into forward passes bounded by count and padded tokens.

A transformer forward pass over a padded batch costs roughly ``len(batch) * longest`` token
positions (every text is padded to the longest one in its batch). Bounding only the number
of texts lets one long post make a batch of 64 headlines cost as much as 64 long posts; a
token budget bounds the padded cost (memory and latency) instead, and sorting by length
keeps the padding small.

The third bound, how long a consumer waits to fill a batch, is not here: it is Pulsar's
batch-receive policy (``batch_max_size`` / ``batch_wait_ms`` in ``cluster/settings.py``).
This module only decides how an already-received list of texts is cut into forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def plan_batches(lengths: Sequence[int], max_items: int, max_tokens: int) -> list[list[int]]:
    """Group item indices into batches bounded by item count and padded token cost.

    Items are visited longest first (ties keep their input order, the sort is stable) and
    packed greedily: an item joins the current batch while ``len(batch) <= max_items`` and
    ``len(batch) * max(lengths in batch) <= max_tokens`` still hold with it, else it opens a
    new batch. Because the first item of a batch is its longest, the padded cost is
    ``len(batch) * lengths[batch[0]]``. A single item longer than ``max_tokens`` cannot
    respect the budget; it gets a batch of its own (the caller truncates texts to the
    model's ``max_seq_length`` beforehand, so this only happens with a budget below that).

    Args:
        lengths: Token count of each item (after truncation, special tokens included), ``>= 0``.
        max_items: Most items per batch, ``>= 1``.
        max_tokens: Padded-token budget per batch (``items * longest``), ``>= 1``.

    Returns:
        Lists of indices into ``lengths``. Every index appears exactly once. Within a batch
        and across batches the indices are in **descending length order**, not input order:
        the caller scatters results back by index. ``[]`` for no items.

    Raises:
        ValueError: ``max_items < 1``, ``max_tokens < 1`` or a negative length.
        TypeError: a length is not an ``int``.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    for i, n in enumerate(lengths):
        # bool is an int subclass but is never a meaningful length.
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"lengths[{i}] is {type(n).__name__}, expected int")
        if n < 0:
            raise ValueError(f"lengths[{i}] is {n}; token lengths must be >= 0")

    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        if current:
            # ``longest`` is the first (longest) item's length; the new item is no longer.
            fits = len(current) < max_items and (len(current) + 1) * longest <= max_tokens
            if fits:
                current.append(i)
                continue
            batches.append(current)
        current, longest = [i], lengths[i]
    if current:
        batches.append(current)
    return batches


def token_lengths(tokenizer: Any, texts: Sequence[str], max_len: int) -> list[int]:
    """Token count of each text as the model sees it: special tokens included, truncated.

    Args:
        tokenizer: A Hugging Face tokenizer (callable as ``tokenizer(texts, ...)``); a fast
            (Rust) tokenizer does the whole list in one call.
        texts: The texts.
        max_len: Truncation length (the model's ``max_seq_length``), ``>= 1``.

    Returns:
        One ``int`` per text, each in ``[0, max_len]``.

    Raises:
        ValueError: ``max_len < 1``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not texts:
        return []
    ids = tokenizer(list(texts), truncation=True, max_length=max_len, padding=False)["input_ids"]
    return [len(x) for x in ids]
