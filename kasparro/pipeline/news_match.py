"""Find which canonical assets a news item mentions, and say how each was matched: a pure function.

Three ways to mention a coin, tried in this order for each asset:

    name     its canonical or alias name, any case, as whole words ("Bitcoin", "USD Coin")
    cashtag  `$` and its ticker, any case ("$SOL", "$link")
    ticker   its ticker alone, upper case, as a whole word ("SOL" but never "solution" or "SOLUTION")

A bare ticker is trusted only when it is at least MIN_TICKER characters and
not a plain English word or common acronym (TICKER_WORDS); a name that is a
plain English word (NAME_WORDS) is never trusted. Such coins need their other
form, or the cashtag. A name or ticker shared by two known assets links
neither: it cannot say which coin is meant, as in quote identity.
"""
from __future__ import annotations

import html
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MATCHED_BY = ("name", "cashtag", "ticker")
MIN_TICKER = 3
# Tickers that are ordinary words or acronyms in news copy ("one of", "a link to", "gas fees", "bond yields",
# "the SEC", "an ETF"): a bare match says nothing about the coin, so they need the name or the `$` form.
TICKER_WORDS = frozenset("""
    ONE LINK GAS BOND NEAR FLOW MASK SAND MANA DASH GOLD TRUE SUN ICE FUN RARE ANT ARK KEEP HOT TIME MEME
    PEOPLE ALPHA BEST WIN GOAL CAKE BAT RAY ACE FORTH POND LOOM DENT OMG AUDIO SUPER BAND RUNE MINA WAVES
    STORM FRONT MOVE LIT GAL MAGIC HIGH EDGE CORE SAFE PUSH REAL BLUR TRIBE POLY OCEAN JUST CITY GAME ANY
    NOT BOB ORDI FET ID HOOK HASH HYPE JOE LEO MED PUMP RAIN ROSE SKY WILD WOO HEX ELON
    SEC ETF CEO CFO CTO USD EUR GBP NFT DAO API IPO OTC ATM FED CPI GDP FBI DOJ IMF ECB SVB FTX USA NYSE AI
    DEFI CEX DEX TVL APY APR KYC AML P2P ATH ALL NEW TOP BIG NOW FREE OPEN
""".split())  # noqa: SIM905 - a word list reads better as words
# Coin names that are ordinary English words ("maker of", "compound interest", "just as", "an avalanche of sales").
NAME_WORDS = frozenset("""
    maker compound flow harmony graph near stacks gas bond link one dash status civic loom ark wax origin
    request mask optimism stellar cosmos quant waves avalanche gold sun true frontier magic ocean edge core
    kava celo band keep storm render theta ankr oasis secret just rain metal symbol sky swipe siren gate
    venus midnight jupiter mantle amp blur sushi gala tribe nano ontology polymath synapse helium golem ergo
    verge ordinals celsius dent flux hive radix marlin canton
""".split())  # noqa: SIM905
_EDGE = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"
# A tag is `<` to the next `>` with no `<` between: a `<` never closed then stops at the next `<` instead of
# scanning to the end of the text from every one (`<[^>]*>` took 0.34 s on 60 KB of "<a ", quadratic).
_TAGS = re.compile(r"<[^<>]*>")


@dataclass(frozen=True)
class KnownAsset:
    """A canonical asset as matching sees it: its id, and every name and ticker it is known by."""

    id: int
    names: tuple[str, ...]
    tickers: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    """One asset a text mentions, how it was matched, and the words that matched."""

    asset_id: int
    matched_by: str
    matched_text: str


def plain_text(*parts: str | None) -> str:
    """Join a title and an HTML summary into plain text: tags dropped, entities decoded."""
    return " ".join(html.unescape(_TAGS.sub(" ", part)) for part in parts if part)


def _unique(keys: Mapping[str, set[int]]) -> dict[str, int]:
    return {key: next(iter(ids)) for key, ids in keys.items() if len(ids) == 1}


def _pattern(words: Iterable[str], prefix: str, flags: int) -> re.Pattern[str] | None:
    ordered = sorted(set(words), key=lambda w: (-len(w), w))  # longest first: "Bitcoin Cash" before "Bitcoin"
    if not ordered:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in ordered)
    return re.compile(f"{_EDGE[0]}{prefix}({alternatives}){_EDGE[1]}", flags)


class Matcher:
    """Match texts against one set of known assets (build once per batch, call per item)."""

    def __init__(self, assets: Iterable[KnownAsset]) -> None:
        names: dict[str, set[int]] = defaultdict(set)
        tickers: dict[str, set[int]] = defaultdict(set)
        for asset in assets:
            for name in asset.names:
                names[" ".join(name.lower().split())].add(asset.id)
            for ticker in asset.tickers:
                tickers[ticker.upper()].add(asset.id)
        self.names = {n: a for n, a in _unique(names).items() if len(n) >= 3 and n not in NAME_WORDS}
        self.tickers = {t: a for t, a in _unique(tickers).items() if t.isalnum()}
        bare = [t for t in self.tickers if len(t) >= MIN_TICKER and t not in TICKER_WORDS and not t.isdigit()]
        self.ways = (("name", _pattern(self.names, "", re.IGNORECASE), self.names),
                     ("cashtag", _pattern(self.tickers, r"\$", re.IGNORECASE), self.tickers),
                     ("ticker", _pattern(bare, "", 0), self.tickers))

    def links(self, text: str) -> list[Link]:
        """Return one link per asset `text` mentions, by the strongest way it is mentioned."""
        found: dict[int, Link] = {}
        for matched_by, pattern, index in self.ways:
            for hit in pattern.finditer(text) if pattern else ():
                key = " ".join(hit.group(1).split())
                asset_id = index[key.lower() if matched_by == "name" else key.upper()]
                found.setdefault(asset_id, Link(asset_id, matched_by, hit.group(0)))
        return sorted(found.values(), key=lambda link: link.asset_id)


def match(text: str, assets: Iterable[KnownAsset]) -> list[Link]:
    """Return the links from `text` to the `assets` it mentions."""
    return Matcher(assets).links(text)
