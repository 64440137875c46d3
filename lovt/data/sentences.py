"""Sentence splitting of report sections, offline.

The original splits with a stanza English `tokenize` pipeline and downloads the model at run time.
Here the default is a rule-based splitter that needs nothing (`RuleSentenceSplitter`); stanza stays an
option (`--sentence_splitter stanza`) when the package and its English model are installed locally.

Both return (sentences, num_tokens) for one section; each sentence is cleaned as in the original:
line-break runs collapsed, line breaks become spaces, runs of spaces/tabs collapsed, stripped.
"""

import re

_NEWLINE_RUNS = re.compile(r"(?:[\t ]*(?:\r\n|\n)+)+")
_SPACE_RUNS = re.compile(r"[\t ]+")


def clean_text(text: str) -> str:
    """Wrapped report lines -> one line with single spaces."""
    text = _NEWLINE_RUNS.sub("\n", text).replace("\n", " ")
    return _SPACE_RUNS.sub(" ", text).strip()


# Words that end with a period without ending the sentence (compared lower-case, period removed).
ABBREVIATIONS = frozenset(
    "dr drs mr mrs ms prof st vs e.g i.e eg ie approx apprx fig figs cf ca incl resp viz jr sr "
    "al pt pts y.o".split()
)
# "No. 5", "Nos. 3-4": an abbreviation only before a number
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "nr"})

# stanza-like tokens: numbers with decimals ("2.5", "1,200"), words with inner ' or -, "___", one symbol
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|\w+(?:['\u2019-]\w+)*|_+|[^\w\s]")
# a blank line (possibly holding spaces) separates paragraphs, which never share a sentence
_PARAGRAPH = re.compile(r"\n[\t ]*\n")
# a line that starts with a list marker ("1.", "2)") starts a sentence
_LIST_ITEM = re.compile(r"\n[\t ]*(?=\d{1,2}[.)]\s)")
# candidate end: terminal punctuation, optional closing quotes/brackets, then whitespace
_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
_LIST_MARKER_ONLY = re.compile(r"\d{1,2}[.)]")
# "clear.There is": a typo'd sentence end without the space (two lower-case letters, then a capitalised word)
_GLUED_END = re.compile(r"(?<=[a-z]{2}[.!?])(?=[A-Z][a-z])")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


class RuleSentenceSplitter:
    """Deterministic English sentence splitter tuned to radiology reports.

    A sentence ends at ``.``, ``!`` or ``?`` followed by whitespace when the next word starts with a
    capital, a digit, an opening bracket/quote or ``_`` (MIMIC's anonymisation), unless the word before
    is an abbreviation ("Dr.", "e.g.", "No. 5") or the sentence so far is only a list marker ("1.").
    Decimal numbers ("2.5 cm") never split (no whitespace after the point). Blank lines and list items
    at the start of a line also start a sentence, and so does a capitalised word glued to a sentence end
    ("clear.There").
    """

    name = "rules"

    def __call__(self, text: str) -> tuple[list[str], int]:
        sentences = []
        for paragraph in _PARAGRAPH.split(text):
            for chunk in _LIST_ITEM.split(paragraph):
                sentences.extend(self._split_chunk(chunk))
        sentences = [s for s in (clean_text(s) for s in sentences) if s]
        return sentences, sum(count_tokens(s) for s in sentences)

    @staticmethod
    def _split_chunk(chunk: str) -> list[str]:
        chunk = _GLUED_END.sub(" ", chunk)
        out, start = [], 0
        for end in _END.finditer(chunk):
            rest = chunk[end.end():].lstrip()
            if not rest:
                break
            nxt = rest[0]
            if not (nxt.isupper() or nxt.isdigit() or nxt in "(['\"_"):
                continue
            words = chunk[start:end.start()].split()
            last = words[-1].lower().lstrip("([\"'") if words else ""
            if chunk[end.start()] == ".":
                if last in ABBREVIATIONS or last + "." in ABBREVIATIONS:
                    continue
                if last in _NUMBER_ABBREVIATIONS and nxt.isdigit():
                    continue
                if len(words) == 1 and _LIST_MARKER_ONLY.fullmatch(words[0] + "."):
                    continue  # "1. No effusion." -- the marker belongs to its item
            out.append(chunk[start:end.end()])
            start = end.end()
        out.append(chunk[start:])
        return out


class StanzaSentenceSplitter:
    """The original's splitter: stanza `tokenize` on CPU. Never downloads; the model must be present.

    model_dir: stanza resources folder (default: stanza's own default, $STANZA_RESOURCES_DIR or
    ~/stanza_resources). Fetch it once on a machine with internet: `python -c "import stanza;
    stanza.download('en', processors='tokenize')"`.
    """

    name = "stanza"

    def __init__(self, lang: str = "en", model_dir: str | None = None):
        try:
            import stanza
        except ImportError as e:
            raise RuntimeError(
                "sentence_splitter='stanza' needs the `stanza` package (pip install stanza); "
                "the default 'rules' splitter needs nothing"
            ) from e
        kwargs = {"dir": model_dir} if model_dir else {}
        try:
            self.pipeline = stanza.Pipeline(
                lang, processors="tokenize", use_gpu=False, download_method=None, verbose=False, **kwargs
            )
        except Exception as e:  # stanza raises several types for a missing model
            where = model_dir or "stanza's default resources dir"
            raise RuntimeError(
                f"stanza '{lang}' tokenize model not found in {where}: {e}. Download it once with "
                f"stanza.download('{lang}', processors='tokenize') or use --sentence_splitter rules"
            ) from e

    def __call__(self, text: str) -> tuple[list[str], int]:
        if not text.strip():
            return [], 0
        doc = self.pipeline(text)
        sentences = [s for s in (clean_text(sent.text) for sent in doc.sentences) if s]
        return sentences, doc.num_tokens


def make_sentence_splitter(name: str = "rules", model_dir: str | None = None):
    """'rules' (default, offline), 'stanza' (error when missing) or 'auto' (stanza if it loads)."""
    if name == "rules":
        return RuleSentenceSplitter()
    if name == "stanza":
        return StanzaSentenceSplitter(model_dir=model_dir)
    if name == "auto":
        try:
            return StanzaSentenceSplitter(model_dir=model_dir)
        except RuntimeError:
            return RuleSentenceSplitter()
    raise ValueError(f"unknown sentence splitter {name!r}: use 'rules', 'stanza' or 'auto'")
