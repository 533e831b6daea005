"""Headline sentiment: VADER plus a crypto/markets lexicon (first, rule-based model).

A later milestone replaces this with a trained model, so the interface is deliberately tiny:
``score(texts) -> (scores, labels)``. Scores are VADER compound values in [-1, 1]; a text is
``"negative"`` when its score is ``<= band[0]``, ``"positive"`` when ``>= band[1]``, else
``"neutral"``.

Why a domain lexicon: VADER was built for social-media English. It has no entry for the words
market news turns on (rally, plunge, bullish, liquidation, delist, ...), and it scores some
crypto proper nouns and jargon as sentiment ("Grayscale Bitcoin *Trust*", "*smart* contract",
"*block* height", "*interest* rates", the "*Fear* & *Greed* index"). The entries below were
written from domain knowledge on VADER's -4..+4 scale, not mined from the evaluation data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

if TYPE_CHECKING:
    from models.sentiment_model import SentimentBatch

#: Label vocabulary, ordered from most negative to most positive.
LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")

#: VADER's published thresholds on the compound score.
VADER_BAND: tuple[float, float] = (-0.05, 0.05)

#: Band used by the crypto-aware scorer unless told otherwise: VADER's own. Tuning the band on
#: the CryptoLin dev half with 5-fold cross-validation (``models.evaluate``) did not beat it on
#: the held-out folds (macro-F1 0.543 tuned vs 0.546 at ±0.05), so no tuned value is shipped.
CRYPTO_BAND: tuple[float, float] = VADER_BAND

# Multi-word expressions are rewritten to one token before VADER sees the text, because
# VADER scores words one at a time ("all-time high" would otherwise score nothing, and
# "Fear & Greed index" would score as two strongly negative words).
_PHRASES: tuple[tuple[str, str], ...] = (
    (r"all[- ]?time[- ]highs?|\bATHs?\b", "alltimehigh"),
    (r"record[- ]highs?", "recordhigh"),
    (r"(?:new|fresh|multi-?year|yearly|monthly) highs?", "newhigh"),
    (r"(?:record|new|fresh|multi-?year|yearly|monthly) lows?", "newlow"),
    (r"bull[- ]runs?", "bullrun"),
    (r"bull[- ]markets?", "bullmarket"),
    (r"bear[- ]markets?", "bearmarket"),
    (r"rug[- ]?pull(?:s|ed)?", "rugpull"),
    (r"pump[- ](?:and|&|n)[- ]dumps?", "pumpanddump"),
    (r"sell[- ]?offs?", "selloff"),
    (r"death[- ]cross", "deathcross"),
    (r"golden[- ]cross", "goldencross"),
    (r"short[- ]squeeze", "shortsqueeze"),
    (r"(?:shuts?|shutting) down", "shutdown"),
    (r"(?:lays?|laid|laying) off", "layoff"),
    (r"rate[- ]hikes?", "ratehike"),
    (r"interest[- ]rates?", "interestrate"),
    (r"smart[- ]contracts?", "smartcontract"),
    (r"fear\s*(?:&|and)\s*greed", "feargreed"),
    (r"(?:bitcoin|ethereum|ether|crypto|grayscale|gbtc|ethe|digital asset)\s+trusts?", "fundtrust"),
    (r"trust\s+wallet", "trustwallet"),
    (r"block\s+(?:height|reward|size|time|explorer|producer)s?", "blockchainterm"),
)
_PHRASE_RES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"\b(?:{pat})\b", re.IGNORECASE), f" {tok} ") for pat, tok in _PHRASES
)

#: Crypto/markets additions and overrides to VADER's lexicon (keys lower-case).
CRYPTO_LEXICON: Mapping[str, float] = {
    # --- phrase tokens (see _PHRASES) ---
    "alltimehigh": 2.5,
    "recordhigh": 2.3,
    "newhigh": 2.0,
    "newlow": -2.0,
    "bullrun": 2.2,
    "bullmarket": 1.8,
    "bearmarket": -2.0,
    "rugpull": -3.2,
    "pumpanddump": -2.8,
    "selloff": -2.0,
    "deathcross": -2.0,
    "goldencross": 1.5,
    "shortsqueeze": 1.0,
    "shutdown": -1.8,
    "layoff": -2.0,
    "layoffs": -2.0,
    "ratehike": -1.2,
    # Jargon and names that VADER would otherwise score as sentiment: neutral.
    "interestrate": 0.0,
    "smartcontract": 0.0,
    "feargreed": 0.0,
    "fundtrust": 0.0,
    "trustwallet": 0.0,
    "blockchainterm": 0.0,
    "trust": 0.5,  # mostly fund and wallet names in this domain (VADER: 2.3)
    "interest": 0.5,  # "institutional interest" is mildly positive; rates are handled above (2.0)
    "block": -0.5,  # Block Inc., blocks of a chain; "blocks access" still reads negative (-1.9)
    "stable": 0.3,  # stablecoin context, not praise (1.2)
    "treasury": 0.0,  # a company's or government's treasury, not praise (0.8)
    "harmony": 0.3,  # Harmony (ONE) is a blockchain (1.7)
    "optimism": 1.0,  # also an Ethereum L2 (2.5)
    # --- market direction, positive ---
    "bullish": 2.3,
    "bulls": 0.8,
    "rally": 2.0,
    "rallies": 2.0,
    "rallied": 2.0,
    "rallying": 2.0,
    "surge": 2.0,
    "surges": 2.0,
    "surged": 2.0,
    "surging": 2.0,
    "soar": 2.3,
    "soars": 2.3,
    "soared": 2.3,
    "soaring": 2.3,
    "skyrocket": 2.6,
    "skyrockets": 2.6,
    "skyrocketed": 2.6,
    "skyrocketing": 2.6,
    "moon": 1.5,
    "mooning": 2.0,
    "jump": 1.5,
    "jumps": 1.5,
    "jumped": 1.5,
    "climb": 1.3,
    "climbs": 1.3,
    "climbed": 1.3,
    "climbing": 1.3,
    "rise": 1.0,
    "rises": 1.0,
    "rose": 1.0,
    "rising": 1.0,
    "spike": 1.0,
    "spikes": 1.0,
    "spiked": 1.0,
    "higher": 0.8,
    "rebound": 1.5,
    "rebounds": 1.5,
    "rebounded": 1.5,
    "recover": 1.2,
    "recovers": 1.2,
    "recovered": 1.2,
    "recovery": 1.2,
    "breakout": 1.5,
    "outperform": 1.5,
    "outperforms": 1.5,
    "outperformed": 1.5,
    "outpaces": 1.0,
    "inflow": 1.5,
    "inflows": 1.5,
    "accumulate": 1.0,
    "accumulates": 1.0,
    "accumulation": 1.0,
    "accumulating": 1.0,
    # --- business and regulatory, positive ---
    "adoption": 1.8,
    "adopt": 1.2,
    "adopts": 1.2,
    "adopted": 1.2,
    "approve": 1.8,
    "approves": 1.8,
    "approved": 1.8,
    "approval": 2.1,
    "greenlight": 1.8,
    "greenlights": 1.8,
    "greenlit": 1.8,
    "legalize": 1.5,
    "legalizes": 1.5,
    "embraces": 1.3,
    "partnership": 1.3,
    "partners": 0.8,
    "partnered": 0.8,
    "launch": 0.6,
    "launches": 0.6,
    "launched": 0.6,
    "unveils": 0.6,
    "debuts": 0.6,
    "invest": 1.0,
    "invests": 1.0,
    "investment": 0.8,
    "funding": 1.0,
    "raises": 0.8,
    "acquire": 0.8,
    "acquires": 0.8,
    "acquisition": 0.8,
    "expands": 1.2,
    "expansion": 1.2,
    "integrates": 0.8,
    "integration": 0.8,
    "listing": 0.6,
    "lists": 0.6,
    "milestone": 1.5,
    "upgrade": 1.2,
    "buyback": 1.0,
    "profitable": 1.8,
    # --- market direction, negative ---
    "bearish": -2.3,
    "bears": -0.8,
    "plunge": -2.5,
    "plunges": -2.5,
    "plunged": -2.5,
    "plunging": -2.5,
    "crash": -2.5,
    "crashes": -2.5,
    "crashed": -2.5,
    "crashing": -2.5,
    "dumped": -1.6,
    "dumping": -1.6,
    "tumble": -2.2,
    "tumbles": -2.2,
    "tumbled": -2.2,
    "slump": -2.2,
    "slumps": -2.2,
    "slumped": -2.2,
    "sink": -1.5,
    "sinks": -1.5,
    "sank": -1.5,
    "drops": -1.2,
    "dropped": -1.2,
    "fall": -1.2,
    "falls": -1.2,
    "fell": -1.2,
    "falling": -1.2,
    "decline": -1.3,
    "declines": -1.3,
    "declined": -1.3,
    "slide": -1.3,
    "slides": -1.3,
    "slid": -1.3,
    "dip": -0.8,
    "dips": -0.8,
    "correction": -1.0,
    "meltdown": -2.8,
    "bloodbath": -3.0,
    "capitulation": -2.0,
    "downturn": -2.0,
    "outflow": -1.5,
    "outflows": -1.5,
    "volatility": -0.5,
    "bubble": -1.5,
    "fud": -1.5,
    "liquidation": -1.8,
    "liquidations": -1.8,
    "liquidated": -1.8,
    "depeg": -2.5,
    "depegs": -2.5,
    "depegged": -2.5,
    "collapses": -2.2,
    "collapsed": -2.2,
    "contagion": -2.5,
    # --- security incidents and crime, negative ---
    "hack": -2.5,
    "hacks": -2.5,
    "hacked": -2.5,
    "hacking": -2.5,
    "hacker": -2.0,
    "hackers": -2.0,
    "exploit": -2.2,
    "exploits": -2.2,
    "exploiter": -2.2,
    "breach": -2.0,
    "theft": -2.5,
    "stole": -2.2,
    "drained": -2.2,
    "vulnerability": -1.8,
    "bug": -1.2,
    "outage": -1.8,
    "ponzi": -3.0,
    "fraudulent": -2.8,
    "laundering": -2.2,
    "ransomware": -2.5,
    "illicit": -2.0,
    "manipulation": -2.0,
    "seized": -1.5,
    "seizes": -1.5,
    # --- legal and regulatory, negative ---
    "bans": -2.6,
    "banning": -2.6,
    "crackdown": -2.2,
    "lawsuit": -2.0,
    "lawsuits": -2.0,
    "sue": -2.0,
    "sues": -2.0,
    "sued": -2.0,
    "suing": -2.0,
    "indicted": -2.5,
    "indictment": -2.5,
    "charged": -1.5,
    "fined": -2.0,
    "bankruptcy": -3.0,
    "insolvent": -3.0,
    "insolvency": -3.0,
    "default": -1.5,
    "defaults": -1.5,
    "delist": -2.0,
    "delists": -2.0,
    "delisted": -2.0,
    "delisting": -2.0,
    "halt": -1.5,
    "halts": -1.5,
    "halted": -1.5,
    "suspend": -1.5,
    "suspends": -1.5,
    "freezes": -1.5,
    "frozen": -1.5,
    "investigate": -1.5,
    "investigates": -1.5,
    "investigation": -1.5,
    "probe": -1.5,
    "probes": -1.5,
    "subpoena": -1.8,
    "subpoenas": -1.8,
    "warn": -1.5,
    "warns": -1.5,
    "restrictions": -1.3,
    "prohibit": -2.0,
    "prohibits": -2.0,
    "sanction": -1.8,
    "sanctions": -1.8,
    "sanctioned": -1.8,
}


def _rewrite_phrases(text: str) -> str:
    for pattern, token in _PHRASE_RES:
        text = pattern.sub(token, text)
    return text


def labels_from_scores(scores: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Map compound scores to labels.

    Args:
        scores: Compound scores, any shape.
        band: ``(lo, hi)`` with ``lo < hi``: ``score <= lo`` is negative, ``score >= hi``
            positive, anything between neutral.

    Returns:
        Array of the same shape holding strings from :data:`LABELS`.
    """
    lo, hi = band
    if not lo < hi:
        raise ValueError(f"neutral band must satisfy lo < hi, got {band}")
    idx = np.ones(np.shape(scores), dtype=np.int64)
    s = np.asarray(scores)
    idx[s <= lo] = 0
    idx[s >= hi] = 2
    return np.asarray(LABELS, dtype=object)[idx].astype(str)


class LexiconSentiment:
    """VADER compound score, optionally with the crypto/markets lexicon and phrase rewriting.

    Works offline: VADER's lexicon files ship inside the ``vaderSentiment`` wheel. Thread-safe
    for concurrent :meth:`score` calls (VADER keeps no per-call state on the analyser).

    Args:
        crypto: Add :data:`CRYPTO_LEXICON` and the phrase rewrites. ``False`` gives plain VADER,
            kept as the baseline the crypto lexicon must beat.
        band: ``(lo, hi)`` neutral band; ``None`` means :data:`CRYPTO_BAND` with ``crypto`` and
            :data:`VADER_BAND` without.
    """

    def __init__(self, crypto: bool = True, band: tuple[float, float] | None = None) -> None:
        self.crypto = crypto
        self.band: tuple[float, float] = band or (CRYPTO_BAND if crypto else VADER_BAND)
        lo, hi = self.band
        if not (-1.0 <= lo < hi <= 1.0):
            raise ValueError(f"band must satisfy -1 <= lo < hi <= 1, got {self.band}")
        self._vader = SentimentIntensityAnalyzer()
        if crypto:
            self._vader.lexicon.update(CRYPTO_LEXICON)

    @property
    def name(self) -> str:
        """``"vader+crypto"`` or ``"vader"``; recorded next to scores so they stay traceable."""
        return "vader+crypto" if self.crypto else "vader"

    def compound(self, texts: Sequence[str]) -> np.ndarray:
        """Compound score per text: ``float32`` array of shape ``(n,)`` in [-1, 1]."""
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not a single str")
        out = np.empty(len(texts), dtype=np.float32)
        for i, text in enumerate(texts):
            t = _rewrite_phrases(text) if self.crypto else text
            out[i] = self._vader.polarity_scores(t)["compound"]
        return out

    def predict(self, texts: Sequence[str]) -> SentimentBatch:
        """Labels, scores and confidences for a batch (the interface trained models share).

        ``scores`` are the compound values of :meth:`score`. VADER gives no probability, so
        ``confidence`` is how deep the score lies inside the region of its label, scaled to
        [0, 1]: for ``positive`` ``(s - hi) / (1 - hi)``, for ``negative`` ``(lo - s) / (1 + lo)``,
        for ``neutral`` the distance to the nearer band edge over half the band's width. With
        VADER's ±0.05 band that is about ``|score|`` for polar labels and 1 at a score of 0.
        It ranks texts by how clear-cut the lexicon finds them; it is not calibrated.
        """
        from models.sentiment_model import SentimentBatch

        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not a single str")
        scores, labels = self.score(list(texts))
        lo, hi = self.band
        s = scores.astype(np.float64)
        conf = np.where(
            labels == "positive",
            (s - hi) / (1.0 - hi),
            np.where(
                labels == "negative", (lo - s) / (1.0 + lo), np.minimum(s - lo, hi - s) / ((hi - lo) / 2)
            ),
        )
        return SentimentBatch(
            labels=[str(x) for x in labels],
            scores=scores.astype(np.float32),
            confidence=np.clip(conf, 0.0, 1.0).astype(np.float32),
        )

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Score a batch.

        Returns:
            ``(scores, labels)``: ``scores`` is ``float32`` of shape ``(n,)`` in [-1, 1];
            ``labels`` is a ``str`` array of shape ``(n,)`` with values from :data:`LABELS`.
            An empty batch gives two empty arrays.
        """
        scores = self.compound(texts)
        return scores, labels_from_scores(scores, self.band)
