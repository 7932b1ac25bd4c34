"""A prompt's tokens, refused early when it cannot fit the context.

llama.cpp's tokenizer takes time quadratic in the number of special tokens written in the text
(`<|im_end|>` repeated: 16,000 of them took 2 to 5 s under load, 4x as many about 16x as long),
and the chat prompt is tokenized with special tokens parsed. A body of megabytes could hold a
worker thread for minutes. So a long text is first counted in pieces, each cut just before a
space, and refused as soon as its pieces hold clearly more tokens than the context: cutting
changes a count only around the cut (a word or a special token written across it), which
`SLACK_PER_CUT` bounds. What is not refused so is at most a few pieces' worth of tokens over
the context, and is tokenized whole, exactly as before.
"""

from __future__ import annotations

from typing import Iterator

from services.exceptions import ContextTooLong
from services.llama_backend import LlamaModel

PIECE_CHARS = 16 * 1024
SLACK_PER_CUT = 64


def _pieces(text: str) -> Iterator[str]:
    """`text` in pieces of at most PIECE_CHARS, cut at spaces where it can; made as they are
    counted (a long text is refused after its first few)."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        end = text.rfind(" ", start + 1, start + PIECE_CHARS)
        end = end if end > start else start + PIECE_CHARS
        yield text[start:end]
        start = end
    yield text[start:]


def prompt_tokens(model: LlamaModel, text: str, n_ctx: int, *, add_special: bool, parse_special: bool) -> list[int]:
    """The tokens of `text`; ContextTooLong, without tokenizing all of it, when its pieces show
    it holds more than `n_ctx`."""
    if len(text) > PIECE_CHARS:
        counted = 0
        for cuts, piece in enumerate(_pieces(text)):
            counted += len(model.tokenize(piece, add_special=add_special and cuts == 0, parse_special=parse_special))
            at_least = counted - SLACK_PER_CUT * cuts
            if at_least >= n_ctx:
                raise ContextTooLong(n_ctx, at_least, at_least=True)
    return model.tokenize(text, add_special=add_special, parse_special=parse_special)
