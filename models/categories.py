"""News categories: multi-label, with a score in [0, 1] per category.

Nine categories (:data:`CATEGORIES`), any number per article (none is allowed). There are no
training labels for them, so the model is two transparent, label-free signals blended:

1. **Phrase rules.** Per category, word-boundary regexes over the headline and the summary,
   written from domain knowledge and then adjusted after reading the errors on the dev half of
   the labelled sample (never the held-out half). A hit in the headline
   counts more than one in the summary only, since the headline names what the story is about
   while summaries mention context ("... as the Fed meets"). Rule evidence per category is
   ``1 - exp(-(title_hits + 0.5 * summary_hits) / RULE_SATURATION)``: one headline hit gives
   ~0.63, two give ~0.86, so a keyword alone is strong but not certain.
2. **Prototype similarity.** Each category has a few short prototype descriptions, embedded
   once in ``__init__`` with the *same* embedder the articles were embedded with. An article's
   similarity to a category is the mean of its two highest cosine similarities to the
   category's prototypes. Raw cosine levels say as much about the article (a long, generic
   summary is close to everything) as about the category, so the score is centred per article:
   ``clip((sim_c - mean_k sim_k) / EMBED_SPAN, 0, 1)``, i.e. how far category ``c`` stands out
   from the article's average over the nine. That is comparable across categories and needs no
   labels. (Tried on the dev half and dropped: an offset per category from its similarity to
   generic "crypto news" anchor sentences, and percentiles over the whole news corpus; neither
   beat the plain centring.)

The final score is ``RULE_WEIGHT * rules + (1 - RULE_WEIGHT) * embedding`` (0.6 / 0.4);
:meth:`Categorizer.predict` keeps the categories at or above ``threshold`` (default 0.4). One
headline keyword alone (0.6 * 0.63 = 0.38) does not pass, nor does similarity alone unless the
category stands out fully (0.4 * 1.0); a keyword plus some topical similarity does, as do two
headline keywords. The weight, span and threshold were chosen on the first (dev) half of the
hand-labelled sample in ``models/data/categories_sample.csv`` (dev micro precision / recall
0.88 / 0.87); ``python -m models.categories_eval`` reports both halves (held-out: 0.79 / 0.76;
per-category figures in ``models/data/README.md``).

Why not a trained head: weak labels from these same rules would teach a linear head the rules'
own mistakes, and the 200 hand labels are the evaluation, not training data. The blend is
cheap (one (n, 384) x (384, k) product and a few regexes per article) and every decision can
be explained by the matched phrase or the nearest prototype.

Articles are never re-embedded here: :meth:`Categorizer.scores` takes the article's
precomputed unit vector (the one the pipeline stores), so one forward pass serves every model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

#: Category keys, in column order of every score matrix.
CATEGORIES: tuple[str, ...] = (
    "regulation",
    "etf_institutional",
    "mining_energy",
    "security_hacks",
    "macro_markets",
    "adoption_payments",
    "technology",
    "legal_courts",
    "exchanges_companies",
)

#: Human-readable label per category key.
CATEGORY_LABELS: dict[str, str] = {
    "regulation": "Regulation & policy",
    "etf_institutional": "ETF & institutional",
    "mining_energy": "Mining & energy",
    "security_hacks": "Security & hacks",
    "macro_markets": "Macro & markets",
    "adoption_payments": "Adoption & payments",
    "technology": "Technology & development",
    "legal_courts": "Legal & courts",
    "exchanges_companies": "Exchanges & companies",
}

#: Default decision threshold on the blended score (chosen on the dev half of the sample).
DEFAULT_THRESHOLD = 0.4
#: Weight of the rule evidence in the blend; the embedding gets ``1 - RULE_WEIGHT``.
RULE_WEIGHT = 0.6
#: Weighted hits at which rule evidence reaches 1 - 1/e (~0.63).
RULE_SATURATION = 1.0
#: Weight of a hit found only in the summary, relative to one in the headline.
SUMMARY_WEIGHT = 0.5
#: Cosine similarity above the article's mean over categories that maps to an embedding score of 1.
EMBED_SPAN = 0.2


class EmbedderLike(Protocol):
    """What the categorizer needs from an embedder: unit vectors for a list of texts."""

    def encode(self, texts: list[str], batch_size: int = ...) -> np.ndarray: ...


# Each entry: (pattern, case_sensitive). Acronyms that are also common words ("SEC", "Fed",
# "ETF" is safe either way) are matched case-sensitively.
_RULES: dict[str, tuple[tuple[str, bool], ...]] = {
    "regulation": (
        (
            r"regulat\w*|lawmakers?|legislat\w*|legislation|bills?(?= to| that| would)|senat(?:e|or|ors)"
            r"|congress\w*|parliament\w*|government\w*|ministry|minister|central banks?|CBDCs?"
            r"|digital (?:yuan|euro|dollar|rupee|pound)|e-CNY|bans?|banned|banning|taxation|crypto tax(?:es)?"
            r"|tax (?:law|laws|rules|bill|authority|authorities|regime|policy|code|agency|on)|politicians?"
            r"|licen[cs]\w*|compliance|KYC|AML|anti-money laundering|sanctions?|regulatory framework"
            r"|MiCA|FATF|crypto (?:policy|rules|law|laws|bill)|watchdogs?|legal tender|crackdown"
            r"|financial (?:regulators?|authority|authorities|supervisory)|draft (?:bill|law)|policymakers?"
            r"|framework for crypto|crypto framework|stablecoin (?:law|laws|rules|bill)",
            False,
        ),
        (r"SEC|CFTC|FCA|FINMA|OCC|FinCEN|IRS|ECB|BIS|PBoC|RBI|Treasury Department|US Treasury", True),
    ),
    "etf_institutional": (
        (
            r"ETFs?|ETPs?|ETNs?|exchange[- ]traded|Grayscale|GBTC|institution(?:al|als|s)?"
            r"|asset managers?|asset management|hedge funds?|pension\w*|BlackRock|Fidelity|Goldman Sachs"
            r"|JPMorgan|Morgan Stanley|Citi(?:group|bank)?|BNY Mellon|State Street|(?<!central )banks?"
            r"|banking giant|MicroStrategy|Saylor|Valkyrie|ProShares|WisdomTree|CoinShares|VanEck"
            r"|fund (?:inflows?|outflows?)|inflows?|outflows?|wealth manag\w*|family offices?|401\(k\)"
            r"|retirement (?:plans?|accounts?)|corporate treasur\w*|balance sheet|futures (?:product|fund)"
            r"|investment products?|Wall Street",
            False,
        ),
    ),
    "mining_energy": (
        (
            r"min(?:er|ers|ing)|hash ?rates?|hashrate|hash power|mining difficulty|difficulty adjustment"
            r"|ASICs?|mining rigs?|energy|electricity|power (?:grid|plants?|consumption)|renewables?"
            r"|carbon|emissions?|climate|environment\w*|proof[- ]of[- ]work|PoW|megawatts?|gigawatts?"
            r"|solar|nuclear|flare gas|gas flaring|green (?:energy|bitcoin)|clean energy",
            False,
        ),
    ),
    "security_hacks": (
        (
            r"hack\w*|exploit\w*|attack\w*|stolen|steal\w*|theft|thie(?:f|ves)|drain(?:ed|s|ing)?"
            r"|scam\w*|fraud\w*|phishing|ponzi|rug ?pull\w*|vulnerabilit\w*|bug bounty|breach\w*"
            r"|ransomware|malware|money laundering|launder\w*|heist|compromised|impersonat\w*"
            r"|pump[- ](?:and|&)[- ]dumps?|extortion|cybercrim\w*|cyber ?attack\w*|Lazarus|North Korea\w*"
            r"|security (?:breach|incident|flaw)|fake|crypto crime|ransom",
            False,
        ),
    ),
    "macro_markets": (
        (
            r"prices?|rall(?:y|ies|ied|ying)|surg\w*|plung\w*|crash\w*|slump\w*|soar\w*|jump\w*|tumbl\w*"
            r"|dips?|dipped|bull(?:s|ish)?|bear(?:s|ish)?|bull market|bear market|support|resistance"
            r"|traders?|trading|inflation|interest rates?|rate hikes?|CPI|recession|stocks?|S&P\s?500"
            r"|Nasdaq|equities|gold|DXY|market cap\w*|volatil\w*|liquidat(?:ed|ions?)|whales?|sell-?offs?"
            r"|all[- ]time highs?|correction|outperform\w*|underperform\w*|candles?|RSI|MACD"
            r"|fear (?:and|&) greed|on-chain data|derivatives|options|futures|funding rates?"
            r"|short sellers?|shorts|longs|hodlers?|price analysis|market (?:sentiment|crash|downturn|rally)"
            r"|sell(?:ing)? pressure|bottom(?:ed|ing)?|capitulat\w*|higher low|lower high|losses|gains"
            r"|pumps?|meltdown|exodus|analysts?|market (?:maker|makers|conditions|moves?)",
            False,
        ),
        # Price levels ("$42K", "USD 30,000"), not amounts of money ("$30M" is a fine or a raise).
        (r"Fed|FOMC|ATH|BTC/USD|ETH/USD|USD \d{1,3}(?:,\d{3})+|USD \d+(?:\.\d+)?K|\$\d+(?:\.\d+)?K", True),
    ),
    "adoption_payments": (
        (
            r"payments?|pay(?:ing|s)? (?:with|in|for)"
            r"|accept(?:s|ed|ing|ance)? (?:bitcoin|crypto|BTC|ETH|dogecoin)"
            r"|merchants?|legal tender|adopt\w*|remittanc\w*|debit cards?|credit cards?|crypto cards?"
            r"|spend(?:ing)? (?:bitcoin|crypto)|checkout|e-commerce|point[- ]of[- ]sale|PayPal|Visa"
            r"|Mastercard|Cash App|Lightning payments?|donat\w*|salar(?:y|ies)|paid in (?:bitcoin|crypto)"
            r"|digital yuan|e-CNY|tourists?|mainstream|everyday use|crypto ATMs?|bitcoin ATMs?"
            r"|official currency|national currency|Bitcoin Law|Chivo|survey|surveyed|respondents",
            False,
        ),
    ),
    "technology": (
        (
            r"upgrade\w*|hard forks?|soft forks?|mainnet|testnet|layer[- ]?(?:2|two)|L2s?|rollups?"
            r"|zk-?\w*|scal(?:ing|ability)|protocol upgrade|smart contracts?|developers?|devs"
            r"|open[- ]source|GitHub|the Merge|proof[- ]of[- ]stake|PoS|Taproot|Lightning Network|sharding"
            r"|EVM|interoperab\w*|cross-chain|Web ?3|metaverse|DAOs?|dApps?|nodes?|validators?|research\w*"
            r"|tokeniz\w*|oracles?|block size|consensus|blockchain (?:technology|platform|network|solution)"
            r"|decentralized (?:app|application|exchange|identity)|DEXs?|liquidity pools?"
            r"|play-to-earn|P2E|gaming|game|software|infrastructure|network upgrade|whitepaper|codebase",
            False,
        ),
    ),
    "legal_courts": (
        (
            r"courts?|judges?|lawsuits?|sues|sued|suing|class[- ]action|trial|prosecut\w*|charged"
            r"|criminal charges|indict\w*|arrest\w*|convict\w*|sentenc\w*|pleads?|pleaded|plea|guilty"
            r"|verdict|ruling|ruled|settle(?:ment|s|d)|subpoena\w*|probes?|investigat\w*|litigation"
            r"|attorneys?|lawyers?|jail\w*|prison|extradit\w*|penalt\w*|fined|enforcement action"
            r"|criminals?|police|Department of Justice|seiz\w*|bankruptcy|Chapter 11|legal action"
            r"|legal battle|legal case|exonerat\w*|acquit\w*|testif\w*|complaint",
            False,
        ),
        (r"DOJ|FBI|IRS-CI", True),
    ),
    "exchanges_companies": (
        (
            r"exchanges?(?![- ]traded)|Binance|Coinbase|Kraken|FTX|Bitfinex|Bitstamp|Gemini|Huobi|OKX|OKEx"
            r"|KuCoin|Bybit|Crypto\.com|BitMEX|Bithumb|Upbit|Robinhood|eToro|Bitpanda|OpenSea|LooksRare"
            r"|Celsius|Voyager|BlockFi|Nexo|Tether|Circle|Terraform Labs|Three Arrows|Alameda"
            r"|Galaxy Digital|acqui(?:res?|red|ring|sition)|merger|takeover|layoffs?|lays? off|laid off"
            r"|job cuts|cuts? (?:jobs|staff|workforce)|funding round|raises?(?= \$| USD)"
            r"|raised|Series [A-E]|valuation|IPO|listings?|lists|delist\w*"
            r"|(?:partners|partnered|partnering) with"
            r"|startups?|(?:crypto|blockchain|bitcoin|mining|fintech|exchange|trading|analytics|wallet|payments?"
            r"|lending|custody|investment) (?:firm|firms|company|companies|giant|operator|provider)"
            r"|venture capital|investment arm|rebrand\w*|headquarters|employees|staff|revenue|earnings"
            r"|profits?|launch(?:es|ed)? (?:its|a|an) (?:own|new)|marketplace|lending platform|lenders?"
            r"|brokers?|brokerage|Bitfury|Ledger|Terraform|Phemex|Animoca|Blockstream",
            False,
        ),
    ),
}

#: Short prototype descriptions per category, embedded once per :class:`Categorizer`.
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "regulation": (
        "Government regulators propose new cryptocurrency rules and legislation",
        "Lawmakers pass a crypto bill; the finance ministry sets tax on digital assets",
        "Central bank announces its digital currency (CBDC) plans",
        "Country bans crypto trading in a regulatory crackdown",
        "Financial watchdog issues licensing and anti-money-laundering requirements for crypto firms",
        "Stablecoin regulation framework agreed by officials",
        "The SEC approves, rejects or delays its decision on a crypto application",
    ),
    "etf_institutional": (
        "Spot Bitcoin ETF application filed with the SEC",
        "Institutional investors and asset managers buy Bitcoin",
        "Bitcoin fund sees record inflows from institutions",
        "Bank launches crypto custody and trading for wealthy clients",
        "Public company adds Bitcoin to its corporate treasury",
        "Grayscale Bitcoin Trust discount and exchange-traded products",
    ),
    "mining_energy": (
        "Bitcoin miners expand mining operations and hash rate",
        "Bitcoin mining energy consumption and renewable power",
        "Mining difficulty adjustment and miner revenue",
        "Crypto mining farm moves to a region with cheap electricity",
        "Environmental impact and carbon emissions of proof-of-work mining",
    ),
    "security_hacks": (
        "Hackers exploit a DeFi protocol and steal millions in crypto",
        "Cross-chain bridge hacked, funds drained",
        "Crypto scam and phishing attack targets investors",
        "Rug pull: developers disappear with investors' funds",
        "Security vulnerability discovered in a smart contract",
        "Stolen crypto traced and frozen after a theft",
    ),
    "macro_markets": (
        "Bitcoin price rallies above resistance as traders turn bullish",
        "Crypto market crashes, Bitcoin falls to a new low",
        "Bitcoin price analysis: support and resistance levels to watch",
        "Inflation data and Federal Reserve interest rate hikes hit stocks and crypto",
        "Altcoins surge while Ethereum consolidates",
        "Bitcoin correlation with the S&P 500, Nasdaq and gold",
    ),
    "adoption_payments": (
        "Merchants start accepting Bitcoin payments",
        "Country makes Bitcoin legal tender",
        "Customers can now pay with cryptocurrency at stores",
        "Crypto adoption grows among everyday users, survey finds",
        "Remittances and cross-border payments with Bitcoin and stablecoins",
        "City adopts Bitcoin for taxes and public services",
    ),
    "technology": (
        "Blockchain network upgrade and hard fork scheduled",
        "Developers release a new protocol version with scalability improvements",
        "Layer-2 scaling solution launches on mainnet",
        "Web3 and metaverse project builds a decentralized platform",
        "Ethereum transition to proof-of-stake",
        "New blockchain game and NFT platform technology",
    ),
    "legal_courts": (
        "Court rules in a crypto lawsuit",
        "Crypto founder arrested and charged with fraud",
        "Prosecutors indict suspects; trial begins",
        "Judge approves settlement in a class-action lawsuit against a crypto firm",
        "SEC sues company in federal court over unregistered securities",
        "Crypto lender files for bankruptcy protection in court",
    ),
    "exchanges_companies": (
        "Crypto exchange lists a new token",
        "Cryptocurrency company acquires a startup",
        "Crypto firm raises funding at a higher valuation",
        "Exchange lays off staff amid the downturn",
        "Crypto exchange launches a new product for its users",
        "Crypto company partners with a major brand",
    ),
}


def _compile(rules: tuple[tuple[str, bool], ...]) -> list[re.Pattern[str]]:
    out = []
    for pattern, case_sensitive in rules:
        flags = 0 if case_sensitive else re.IGNORECASE
        out.append(re.compile(rf"(?<![\w$])(?:{pattern})(?!\w)", flags))
    return out


_COMPILED: dict[str, list[re.Pattern[str]]] = {c: _compile(_RULES[c]) for c in CATEGORIES}


def _split(text: str) -> tuple[str, str]:
    """``"title. summary"`` (how the pipeline joins them) -> (title, summary)."""
    head, sep, tail = text.partition(". ")
    return (head, tail) if sep else (text, "")


def rule_hits(text: str) -> dict[str, list[str]]:
    """Matched phrases per category (lower-cased, distinct, headline matches first).

    Args:
        text: ``"title. summary"`` or just a title.

    Returns:
        ``{category: [phrase, ...]}`` for every category with at least one match; useful to
        explain a score.
    """
    out: dict[str, list[str]] = {}
    for cat in CATEGORIES:
        seen: dict[str, None] = {}
        for pat in _COMPILED[cat]:
            for m in pat.finditer(text):
                seen.setdefault(m.group(0).lower(), None)
        if seen:
            out[cat] = list(seen)
    return out


def rule_evidence(texts: Sequence[str]) -> np.ndarray:
    """Rule evidence per category, ``(n, 9)`` float32 in [0, 1).

    A distinct phrase counts 1 in the headline and :data:`SUMMARY_WEIGHT` when only in the
    summary; the total maps through ``1 - exp(-total / RULE_SATURATION)``.
    """
    ev = np.zeros((len(texts), len(CATEGORIES)), dtype=np.float32)
    for i, text in enumerate(texts):
        title, summary = _split(text)
        for j, cat in enumerate(CATEGORIES):
            in_title: set[str] = set()
            in_summary: set[str] = set()
            for pat in _COMPILED[cat]:
                in_title.update(m.group(0).lower() for m in pat.finditer(title))
                if summary:
                    in_summary.update(m.group(0).lower() for m in pat.finditer(summary))
            total = len(in_title) + SUMMARY_WEIGHT * len(in_summary - in_title)
            if total:
                ev[i, j] = 1.0 - np.exp(-total / RULE_SATURATION)
    return ev


class Categorizer:
    """Multi-label news categories from phrase rules plus prototype similarity.

    Args:
        embedder: The embedder the article vectors come from (``models.embedder.Embedder`` or
            anything with ``encode(list[str]) -> (n, dim)`` unit rows). Used once, here, to
            embed the prototypes (53 short sentences); never for articles.
        threshold: Score in (0, 1] at or above which :meth:`predict` keeps a category.

    Raises:
        ValueError: ``threshold`` outside (0, 1], or the embedder returns a wrong shape.
    """

    def __init__(self, embedder: EmbedderLike, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = float(threshold)
        proto_texts: list[str] = []
        owner: list[int] = []
        for j, cat in enumerate(CATEGORIES):
            proto_texts.extend(PROTOTYPES[cat])
            owner.extend([j] * len(PROTOTYPES[cat]))
        vecs = np.asarray(embedder.encode(proto_texts), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(proto_texts):
            raise ValueError(f"embedder returned shape {vecs.shape} for {len(proto_texts)} prototypes")
        self.dim = int(vecs.shape[1])
        self._protos = vecs  # (p, dim), unit rows
        self._owner = np.asarray(owner, dtype=np.int64)  # (p,) category index of each prototype

    def _category_sims(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) unit rows -> (n, 9): mean of the two best prototype cosines per category."""
        sims = vectors @ self._protos.T  # (n, p)
        out = np.empty((vectors.shape[0], len(CATEGORIES)), dtype=np.float32)
        for j in range(len(CATEGORIES)):
            block = sims[:, self._owner == j]
            top = np.sort(block, axis=1)[:, -2:]
            out[:, j] = top.mean(axis=1)
        return out

    def embedding_evidence(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated prototype similarity, ``(n, 9)`` float32 in [0, 1].

        Each category's similarity minus the article's mean similarity over all nine, over
        :data:`EMBED_SPAN`, clipped: how far the category stands out for this article.
        """
        raw = self._category_sims(vectors)
        rel = raw - raw.mean(axis=1, keepdims=True)
        return np.clip(rel / EMBED_SPAN, 0.0, 1.0).astype(np.float32)

    def scores(self, texts: list[str], vectors: np.ndarray) -> np.ndarray:
        """Score every category for every article.

        Args:
            texts: ``"title. summary"`` per article (or titles), ``n`` items.
            vectors: ``(n, dim)`` float32 unit embeddings of the same articles, from the
                embedder this categorizer was built with.

        Returns:
            ``(n, 9)`` float32 in [0, 1], columns in :data:`CATEGORIES` order.

        Raises:
            TypeError: ``texts`` is a ``str``.
            ValueError: ``vectors`` is not ``(len(texts), dim)``.
        """
        if isinstance(texts, str):
            raise TypeError("scores() takes a list of texts, not a single str")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(texts), self.dim):
            raise ValueError(f"vectors must have shape ({len(texts)}, {self.dim}), got {vectors.shape}")
        if not texts:
            return np.zeros((0, len(CATEGORIES)), dtype=np.float32)
        blended = RULE_WEIGHT * rule_evidence(texts) + (1.0 - RULE_WEIGHT) * self.embedding_evidence(vectors)
        return np.clip(blended, 0.0, 1.0).astype(np.float32)

    def predict(self, texts: list[str], vectors: np.ndarray) -> list[dict[str, float]]:
        """Categories at or above the threshold per article, highest score first (may be empty)."""
        s = self.scores(texts, vectors)
        out: list[dict[str, float]] = []
        for row in s:
            order = np.argsort(-row, kind="stable")
            out.append({CATEGORIES[j]: float(row[j]) for j in order if row[j] >= self.threshold})
        return out
