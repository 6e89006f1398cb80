"""Object phrases in a completion's text, the sentence each comes from, and the completion tokens that spell it.

The extractor is a small rule over words, with no tagger or model:

1. The text is split into sentences (at ``.``, ``!``, ``?``, ``;`` or a line break) and words (letters, digits,
   hyphens, apostrophes); any other character (a comma, a bracket) ends a phrase.
2. A phrase starts after a determiner (``the``, ``a``, ``an``, ``this``, a number word...) and runs over the
   following words until a function word (a verb such as ``is``, a preposition such as ``of``, a pronoun, a
   conjunction, a determiner) or punctuation, for at most ``max_words`` words.
3. With ``object_nouns``, a phrase is cut after its last word that is one of those nouns and dropped when it holds
   none: for the synthetic shapes, ``"The blue circle is at the top left"`` gives ``"blue circle"`` (and without
   nouns also ``"top left"``).

``noun_phrases(..., whole_text_is_phrase=True)`` also takes a short text as one phrase start (an answer such as
``"red circle"`` has no determiner). Phrases are compared case-insensitively; each distinct phrase is kept once,
with every place it occurs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DETERMINERS = frozenset(
    "the a an this that these those each every its their his her my our your one two three four five six seven "  # noqa: SIM905
    "eight nine ten".split()
)
FUNCTION_WORDS = frozenset(
    "is are was were be been being am has have had do does did can could will would should may might must it they "  # noqa: SIM905
    "he she we you i them him us me there here which who whom whose what where when why how and or but nor so yet "
    "if then than as of in on at to from by with without into onto over under above below near beside between "
    "behind inside outside around about for not no also very".split()
)
_SENTENCE = re.compile(r"[^.!?;\n]+")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*|[^\sA-Za-z0-9]")


@dataclass
class Phrase:
    """One distinct phrase: its text (as first written), where it occurs (character spans), and its first sentence."""

    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)
    sentence: str = ""


def noun_phrases(
    text: str,
    *,
    object_nouns: Iterable[str] | None = None,
    max_words: int = 4,
    offset: int = 0,
    whole_text_is_phrase: bool = False,
) -> list[Phrase]:
    """The object phrases of ``text`` in order of first occurrence (see the module docstring for the rule).

    Character spans are shifted by ``offset`` (the position of ``text`` in a longer string).
    """
    nouns = None if object_nouns is None else {n.lower() for n in object_nouns}
    found: dict[str, Phrase] = {}
    for sentence in _SENTENCE.finditer(text):
        tokens = list(_TOKEN.finditer(sentence.group()))
        starts = [i + 1 for i, t in enumerate(tokens) if t.group().lower() in DETERMINERS]
        if whole_text_is_phrase:
            starts.insert(0, 0)
        for start in starts:
            run = []
            for token in tokens[start : start + max_words]:
                word = token.group().lower()
                if not word[0].isalnum() or word in FUNCTION_WORDS or word in DETERMINERS:
                    break
                run.append(token)
            if nouns is not None:
                last = max((i for i, t in enumerate(run) if t.group().lower() in nouns), default=-1)
                run = run[: last + 1]
            if not run:
                continue
            begin = offset + sentence.start() + run[0].start()
            end = offset + sentence.start() + run[-1].end()
            words = " ".join(t.group() for t in run)
            phrase = found.setdefault(words.lower(), Phrase(words, sentence=sentence.group().strip()))
            if (begin, end) not in phrase.spans:
                phrase.spans.append((begin, end))
    return list(found.values())


def token_char_spans(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``token_ids`` (special tokens skipped) and each token's character span in it.

    Spans come from decoding growing prefixes, so multi-token characters and merged spaces are placed where the
    tokenizer puts them; a special token gets an empty span.
    """
    spans, previous = [], 0
    for k in range(len(token_ids)):
        end = len(tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=True))
        spans.append((min(previous, end), end))
        previous = max(previous, end)
    return tokenizer.decode(list(token_ids), skip_special_tokens=True), spans


def tokens_overlapping(char_spans: Sequence[tuple[int, int]], spans: Iterable[tuple[int, int]]) -> list[int]:
    """Indices of the tokens whose character span overlaps any of ``spans``."""
    wanted = list(spans)
    return [k for k, (a, b) in enumerate(char_spans) if any(a < end and start < b for start, end in wanted)]
