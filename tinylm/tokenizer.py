"""BPE tokenizer (HF `tokenizers`), as the model doc says: lower-cased, accents stripped,
whitespace pre-tokenizer, [PAD]=0 [UNK]=1 [CLS]=2 [MASK]=3 [SEP]=4.

Every model input is `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, truncated to max_len, so the
classifier reads position 0 and the host and the device see the same ids."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[MASK]", "[SEP]"]
PAD, UNK, CLS, MASK, SEP = range(5)


def corpus_lines(paths: Iterable[str | Path]) -> Iterator[str]:
    """Lines of every .txt/.txt.gz file given (directories are searched for them)."""
    for p in paths:
        p = Path(p)
        files = sorted(p.glob("*.txt*")) if p.is_dir() else [p]
        for f in files:
            opener = gzip.open if f.suffix == ".gz" else open
            with opener(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield line


def task_texts(tasks, data_dir=None) -> list[str]:
    """The training-split texts of `tasks` (both sides of a pair), one line each: the corpus of a
    per-task tokenizer (`tokenizer --task-text`) and of task-adaptive pretraining (TAPT, Gururangan
    et al. 2020). Labels are not read."""
    from tinynlp_data import load_split
    lines = []
    for t in tasks:
        for ex in load_split(t, "train", data_dir):
            lines += [x for x in (ex.text, ex.text_b) if x and x.strip()]
    return lines


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    return tok


def train_tokenizer(lines: Iterable[str], vocab_size: int = 8192) -> Tokenizer:
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, "special tokens must be ids 0..4"
    return tok


def load_tokenizer(path_or_json: str | Path) -> Tokenizer:
    s = str(path_or_json)
    if s.lstrip().startswith("{"):
        return Tokenizer.from_str(s)
    return Tokenizer.from_file(s)


def encode(tok: Tokenizer, text: str, text_b: str | None = None, max_len: int = 256) -> list[int]:
    """[CLS] A [SEP] (B [SEP]), truncating the longer text first so the result fits max_len."""
    a = tok.encode(text, add_special_tokens=False).ids
    b = tok.encode(text_b, add_special_tokens=False).ids if text_b is not None else None
    return _assemble(a, b, max_len)


def _assemble(a: list[int], b: list[int] | None, max_len: int) -> list[int]:
    if b is None:
        return [CLS] + a[:max(max_len - 2, 0)] + [SEP]
    na, nb, budget = len(a), len(b), max_len - 3
    while na + nb > budget:          # longer side first
        if na >= nb:
            na -= 1
        else:
            nb -= 1
    return [CLS] + a[:na] + [SEP] + b[:nb] + [SEP]


def segment_ids(ids: list[int]) -> list[int]:
    """1 up to and including the first [SEP], 2 after it, 0 for padding."""
    out, seg = [], 1
    for t in ids:
        out.append(0 if t == PAD else seg)
        if t == SEP:
            seg = 2
    return out


def encode_batch(tok: Tokenizer, texts: list[str], texts_b: list[str] | None = None,
                 max_len: int = 256) -> list[list[int]]:
    """`encode` for many examples at once (the tokenizer runs in parallel); same ids as encode."""
    a_all = [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    if texts_b is None:
        return [_assemble(a, None, max_len) for a in a_all]
    b_all = [e.ids for e in tok.encode_batch(list(texts_b), add_special_tokens=False)]
    return [_assemble(a, b, max_len) for a, b in zip(a_all, b_all)]


def encode_examples(tok: Tokenizer, examples, max_len: int) -> list[list[int]]:
    """Ids of tinynlp_data Examples (single texts or pairs) with encode's rules."""
    if examples and examples[0].text_b is not None:
        return encode_batch(tok, [e.text for e in examples], [e.text_b for e in examples], max_len)
    return encode_batch(tok, [e.text for e in examples], None, max_len)
