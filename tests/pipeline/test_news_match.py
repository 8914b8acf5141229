"""Linking news text to canonical assets: a pure function, with the known false matches that must not link."""
from __future__ import annotations

import timeit

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kasparro.pipeline.news_match import NAME_WORDS, TICKER_WORDS, KnownAsset, Link, match, plain_text

ASSETS = [
    KnownAsset(1, ("Bitcoin",), ("BTC",)), KnownAsset(2, ("Solana",), ("SOL",)),
    KnownAsset(3, ("Chainlink",), ("LINK",)), KnownAsset(4, ("Harmony",), ("ONE",)),
    KnownAsset(5, ("Bitcoin Cash",), ("BCH",)), KnownAsset(6, ("USD Coin",), ("USDC",)),
    KnownAsset(7, ("NEO",), ("NEO",)), KnownAsset(8, ("Gas",), ("GAS",)), KnownAsset(9, ("BarnBridge",), ("BOND",)),
    KnownAsset(10, ("Optimism",), ("OP",)), KnownAsset(11, ("Ethereum", "Ether"), ("ETH",)),
    KnownAsset(12, ("Terra Classic",), ("LUNC",)), KnownAsset(13, ("Ampleforth",), ("AMPL",)),
    KnownAsset(14, ("Amp",), ("AMP",)), KnownAsset(15, ("JUST",), ("JST",)),
]
IDS = {"bitcoin": 1, "solana": 2, "chainlink": 3, "harmony": 4, "bitcoin-cash": 5, "usdc": 6, "gas": 8, "bond": 9,
       "optimism": 10, "ethereum": 11, "amp": 14, "just": 15}


def linked(text: str) -> dict[int, str]:
    return {link.asset_id: link.matched_by for link in match(text, ASSETS)}


# Known false matches: each text must link none of the listed assets.
FALSE_MATCHES = [
    ("A fee-market solution for congested blocks", ("solana",)),
    ("The SOLUTION shipped today", ("solana",)),
    ("Consolidation continues in SOLANA-adjacent names... or not: CONSOLE", ()),
    ("One link between bank runs and gas fees", ("chainlink", "harmony", "gas")),
    ("ONE chart shows a LINK between GAS prices and BOND yields", ("chainlink", "harmony", "gas", "bond")),
    ("Bond yields tanked as emergency measures were announced", ("bond",)),
    ("Traders cite optimism about a bailout; OP-ED pages disagree", ("optimism",)),
    ("Tokens such as WBTC and BTCB are wrapped", ("bitcoin",)),
    ("Etherscan and ethereal prose", ("ethereum",)),
    ("A subsolar link: sol-gel chemistry", ("solana", "chainlink")),
    # Seen in the CoinDesk capture: "just" linked the JUST coin before it joined NAME_WORDS.
    ("Signature Bank stock fell just as regulators moved in", ("just",)),
    ("Exchanges amp up reserves", ("amp",)),
]


@pytest.mark.parametrize("text, forbidden", FALSE_MATCHES)
def test_known_false_matches_do_not_link(text: str, forbidden: tuple[str, ...]) -> None:
    assert not set(linked(text)) & {IDS[name] for name in forbidden}


@pytest.mark.parametrize("text, expected", [
    ("Bitcoin rallies", {1: "name"}),
    ("bitcoin cash and Bitcoin", {5: "name", 1: "name"}),
    ("SOL up 5%", {2: "ticker"}),
    ("$sol and $LINK climb", {2: "cashtag", 3: "cashtag"}),
    ("Chainlink adds staking", {3: "name"}),
    ("Harmony bridge exploited; $ONE falls", {4: "cashtag"}),  # "Harmony" is a word: only the cashtag counts
    ("Traders bet on USD  Coin; USDC trades at 90 cents", {6: "name"}),
    ("ETH and Ether", {11: "name"}),
    ("$OP airdrop", {10: "cashtag"}),
    ("BTC-USD broke out", {1: "ticker"}),
])
def test_names_tickers_and_cashtags_link_and_say_how(text: str, expected: dict[int, str]) -> None:
    assert linked(text) == expected


def test_a_ticker_two_assets_share_links_neither() -> None:
    assets = [KnownAsset(1, ("Alpha Coin",), ("XYZ",)), KnownAsset(2, ("Beta Coin",), ("XYZ",))]

    assert match("XYZ and $XYZ surge", assets) == []
    assert match("Alpha Coin surges", assets) == [Link(1, "name", "Alpha Coin")]


def test_plain_text_drops_tags_and_decodes_entities() -> None:
    assert plain_text("Title", "<p>BTC &amp; <b>ETH</b></p>", None) == "Title  BTC &amp;  ETH  ".replace("&amp;", "&")


tickers = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=3, max_size=6)
letters = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=1,
                  max_size=4)
# Surroundings without letters, so they never spell a name or ticker themselves.
filler = st.text(st.sampled_from(" ,.;:-()!?'\n0123456789"), max_size=30)


@given(ticker=tickers, before=letters, after=letters, prefix=filler, suffix=filler, glued_side=st.integers(0, 2))
def test_a_ticker_inside_a_longer_word_never_links(ticker: str, before: str, after: str, prefix: str, suffix: str,
                                                   glued_side: int) -> None:
    word = {0: before + ticker, 1: ticker + after, 2: before + ticker + after}[glued_side]
    asset = KnownAsset(1, ("Zzqx Protocol",), (ticker,))

    assert match(f"{prefix} {word} {suffix}", [asset]) == []


@given(ticker=tickers, name=st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz"), min_size=4, max_size=10),
       prefix=filler, suffix=filler, cashtag=st.booleans(), upper=st.booleans())
def test_a_name_or_cashtag_standing_alone_always_links(ticker: str, name: str, prefix: str, suffix: str,
                                                       cashtag: bool, upper: bool) -> None:
    assume(name not in NAME_WORDS and ticker not in TICKER_WORDS and name.upper() != ticker)
    asset = KnownAsset(1, (name.title(),), (ticker,))
    mention = f"${ticker.lower()}" if cashtag else (name.upper() if upper else name.title())

    links = match(f"{prefix} {mention} {suffix}", [asset])

    assert [(link.asset_id, link.matched_by) for link in links] == [(1, "cashtag" if cashtag else "name")]


def seconds_per_call(function: object, text: str) -> float:
    timer = timeit.Timer(lambda: function(text))  # type: ignore[operator]
    return min(seconds / number for number, seconds in (timer.autorange() for _ in range(3)))


@pytest.mark.parametrize("unit", ["<a ", "<", "< b <i x='1' "])
def test_stripping_tags_takes_time_linear_in_the_text(unit: str) -> None:
    # Tags that never close: the old pattern scanned to the end of the text from each `<`.
    small, large = unit * 2_000, unit * 20_000

    ratio = seconds_per_call(plain_text, large) / seconds_per_call(plain_text, small)

    assert ratio < 30, f"ten times the text took {ratio:.0f} times as long"  # linear: about 10; quadratic: 100


def test_a_tag_is_stripped_up_to_its_own_closing_bracket() -> None:
    assert plain_text("<p>Bitcoin <b>rose</b></p>").split() == ["Bitcoin", "rose"]
    assert plain_text("a <b <i>c</i>").split() == ["a", "<b", "c"]  # an unclosed `<` stays as text
