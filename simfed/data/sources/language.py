"""Which language a paragraph is in, by a stop-word vote; used to keep only translated paragraphs."""
from __future__ import annotations

import re
from collections import Counter

# Frequent function words per language. Words in two lists, or in AMBIGUOUS, are dropped below
# so that every hit is evidence for exactly one language.
_STOP_WORDS: dict[str, str] = {
    "de": "der das und ist nicht ein eine einer eines einem einen mit von zu dem auf für sich "
          "auch wird kann wenn oder bei nach aus diese dieser dieses nur über durch sind wurde "
          "sie zum zur dass jedoch muss können kein keine ob",
    "en": "the and of to that for with are this be by not or it from which can if when these you "
          "your has have its all only been may must should than their there would also into each "
          "such used does this any other",
    "fr": "les une est et dans pour pas sur sont avec cette par au aux ou être peut elle ils leur "
          "nous vous lorsque sans été fait tous toutes ces mais votre sera avoir",
    "it": "di che è per sono nel nella dei questo questa anche più alla alle può essere viene ed "
          "ma tra gli della delle degli dello sul sulla quando ogni tutti loro questi deve vengono",
    "es": "el los las por para más como este esta pero sus puede cuando también está están hay muy "
          "desde sobre ser todos otros",
    "nl": "het een van dat op te voor met zijn niet aan door worden wordt ook bij om kan deze naar "
          "dan uit maar wat zal kunnen hebben wanneer alle geen wel",
}
# Frequent in two or more of these languages (Dutch `die`/`of`/`noch`/`als`, Romance `la`/`se`...).
AMBIGUOUS = frozenset("a al als an con de del den des die du e en er es il in is la le lo no noch o "
                      "of on que se si son su te un una uno was werden wie will".split())
_counts = Counter(w for words in _STOP_WORDS.values() for w in set(words.split()))
STOP_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(w for w in words.split() if _counts[w] == 1 and w not in AMBIGUOUS)
    for lang, words in _STOP_WORDS.items()
}
LANGUAGES = tuple(STOP_WORDS)
_WORD = re.compile(r"\b[^\W\d_]+\b")  # letters only; `ed25519` is not the word `ed`


def language_votes(text: str) -> dict[str, int]:
    """Stop-word hits per language in `text` (lower-cased words)."""
    votes = dict.fromkeys(LANGUAGES, 0)
    for word in _WORD.findall(text.lower()):
        for lang, words in STOP_WORDS.items():
            if word in words:
                votes[lang] += 1
                break
    return votes


def paragraph_language(text: str) -> str | None:
    """The language with the most stop-word hits; None for a tie or no hit (code, option lists)."""
    votes = language_votes(text)
    ranked = sorted(votes.values(), reverse=True)
    if ranked[0] == 0 or ranked[0] == ranked[1]:
        return None
    return max(votes, key=votes.__getitem__)


def keep_language(text: str, lang: str) -> str:
    """The paragraphs of `text` (blank-line separated) that vote for `lang`, rejoined."""
    if lang not in STOP_WORDS:
        raise ValueError(f"no stop words for language '{lang}'; known: {', '.join(LANGUAGES)}")
    paragraphs = re.split(r"\n\s*\n", text)
    return "\n\n".join(p.strip("\n") for p in paragraphs if paragraph_language(p) == lang)
