"""Report section parsing and sentence splitting (lovt.data.sections, lovt.data.sentences)."""

import pytest

from lovt.data.sections import CUSTOM_RULE_STUDIES, findings_and_impression, normalize_section_name, split_sections
from lovt.data.sentences import (
    RuleSentenceSplitter,
    StanzaSentenceSplitter,
    clean_text,
    count_tokens,
    make_sentence_splitter,
)

# a MIMIC-CXR report: lines start with one space, "blank" lines hold one space
REPORT = "\n".join([
    "                                 FINAL REPORT",
    " EXAMINATION:  CHEST (PA AND LAT)",
    " ",
    " INDICATION:  ___F with new onset ascites  // eval for infection",
    " ",
    " TECHNIQUE:  Chest PA and lateral",
    " ",
    " COMPARISON:  None.",
    " ",
    " FINDINGS: ",
    " ",
    " There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral",
    " nodular opacities that most likely represent nipple shadows. The",
    " cardiomediastinal silhouette is normal.  Clips project over the left lung,",
    " potentially within the breast. The imaged upper abdomen is unremarkable.",
    " ",
    " IMPRESSION: ",
    " ",
    " No acute cardiopulmonary process.",
    "",
])


def test_sections_of_a_full_report():
    sections = split_sections(REPORT)
    names = [s.name for s in sections]
    assert names == ["preamble", "examination", "indication", "technique", "comparison", "findings", "impression"]
    assert "FINAL REPORT" in sections[0].text
    found = findings_and_impression(REPORT, study="s50414267")
    assert found["findings"].split()[:5] == ["There", "is", "no", "focal", "consolidation,"]
    assert "EXAMINATION" not in found["findings"] and "IMPRESSION" not in found["findings"]
    assert found["impression"].strip() == "No acute cardiopulmonary process."
    # offsets point into the report
    assert all(REPORT[s.start:s.start + len(s.text)] == s.text for s in sections)


def test_missing_sections_and_skips():
    no_impression = REPORT.split(" IMPRESSION:")[0]
    assert findings_and_impression(no_impression)["impression"] == ""
    no_findings = REPORT.replace(" FINDINGS:", " NOTE:")
    assert findings_and_impression(no_findings)["findings"] == ""
    assert findings_and_impression(no_findings)["impression"].strip() == "No acute cardiopulmonary process."
    neither = " INDICATION:  cough\n \n COMPARISON:  None.\n \n No change.\n"
    assert findings_and_impression(neither) is None
    sections = split_sections(neither)  # neither -> the last paragraph gets its own section
    assert sections[-1].name == "last_paragraph" and sections[-1].text.strip() == "No change."
    assert findings_and_impression("") is None
    assert findings_and_impression("no headers at all, just text") is None
    assert split_sections("just text")[0].name == "full report"
    # studies of the reference parser's custom tables are skipped whatever their text
    assert "s50913680" in CUSTOM_RULE_STUDIES and len(CUSTOM_RULE_STUDIES) == 54
    assert findings_and_impression(REPORT, study="s50913680") is None


@pytest.mark.parametrize("raw, name", [
    ("FINDINGS AND IMPRESSION", "impression"),
    ("FINDINGS/IMPRESSION", "impression"),
    ("CONCLUSION", "impression"),
    ("IMPRESSON", "impression"),
    ("FINAL IMPRESSION", "impression"),
    ("FINDNGS", "findings"),
    ("CHEST, PA AND LATERAL", "findings"),
    ("PORTABLE UPRIGHT CHEST", "findings"),
    ("PA AND LAT", "findings"),
    ("REASON FOR EXAM", "indication"),
    ("CLINICAL HISTORY", "history"),
    ("COMPARISONS", "comparison"),
    ("WET READ", "wet read"),
    ("TECHNIQUE", "technique"),
    ("SOMETHING ELSE", "something else"),
])
def test_section_name_normalisation(raw, name):
    assert normalize_section_name(raw) == name


def test_header_rules():
    # FINDINGS AND IMPRESSION counts as impression, CHEST title with empty body is dropped
    text = "\n CHEST, PA AND LATERAL:\n \n INDICATION:  dyspnea\n \n FINDINGS AND IMPRESSION:  Mild edema.\n"
    sections = split_sections(text)
    assert [s.name for s in sections] == ["preamble", "indication", "impression"]
    assert findings_and_impression(text) == {"findings": "", "impression": " Mild edema.\n"}
    # lower-case or mixed-case headers are not headers, nor are headers not preceded by "\n "
    assert findings_and_impression(" Findings:  Lungs clear.\n Impression:  Normal.\n") is None
    assert findings_and_impression("\nFINDINGS:  Lungs clear.\n") is None
    # a repeated section keeps its last occurrence
    twice = " FINDINGS:  first.\n \n IMPRESSION:  one.\n \n FINDINGS:  second.\n"
    assert findings_and_impression(twice)["findings"].strip() == "second."
    # after a header the next one is searched from the following line break on: a header on the very
    # next line after "FINDINGS:\n" is swallowed (the reference parser's rule against bad parses)
    swallowed = "\n FINDINGS:\n IMPRESSION:  Normal.\n \n COMPARISON:  None.\n"
    found = findings_and_impression(swallowed)
    assert found["impression"] == "" and "IMPRESSION:  Normal." in found["findings"]
    spaced = "\n FINDINGS:\n \n IMPRESSION:  Normal.\n"
    assert findings_and_impression(spaced) is not None
    assert findings_and_impression(spaced)["findings"] == ""


def test_clean_text_joins_wrapped_lines():
    assert clean_text("  Bilateral\n nodular   opacities\r\n\n\t that  \n") == "Bilateral nodular opacities that"


SPLIT_CASES = [
    ("There is no effusion.  The heart is normal.", ["There is no effusion.", "The heart is normal."]),
    ("A nodule measures 2.5 cm. No pneumothorax.", ["A nodule measures 2.5 cm.", "No pneumothorax."]),
    ("Dr. ___ was notified at 10:30 a.m. on ___. Findings were discussed.",
     ["Dr. ___ was notified at 10:30 a.m. on ___.", "Findings were discussed."]),
    ("Devices, e.g. lines, are unchanged. Lungs clear.", ["Devices, e.g. lines, are unchanged.", "Lungs clear."]),
    ("1. No acute process. 2. Small left effusion.", ["1. No acute process.", "2. Small left effusion."]),
    ("Compared to study No. 3 from ___. Stable.", ["Compared to study No. 3 from ___.", "Stable."]),
    ("Is there pneumonia? No. Lungs are clear!", ["Is there pneumonia?", "No.", "Lungs are clear!"]),
    ("Slight\n increase in\n opacity.  Unchanged\n tube.", ["Slight increase in opacity.", "Unchanged tube."]),
    ("Known mets (see prior). Stable.", ["Known mets (see prior).", "Stable."]),
    ("Lines as before. \n \n Heart normal", ["Lines as before.", "Heart normal"]),
    ("Heart normal\n \n Lungs clear", ["Heart normal", "Lungs clear"]),
    ("\n 1. Small effusion\n 2. No pneumothorax", ["1. Small effusion", "2. No pneumothorax"]),
    ("Lungs are clear.There is no effusion.", ["Lungs are clear.", "There is no effusion."]),
    ("Tube tip, e.g.The carina, 2.5cm.", ["Tube tip, e.g.The carina, 2.5cm."]),
    ("", []),
    ("   \n \n  ", []),
]


@pytest.mark.parametrize("text, expected", SPLIT_CASES)
def test_rule_sentence_splitter(text, expected):
    sentences, num_tokens = RuleSentenceSplitter()(text)
    assert sentences == expected
    assert num_tokens == sum(count_tokens(s) for s in expected)


def test_token_count_like_stanza():
    assert count_tokens("A nodule measures 2.5 cm.") == 6  # A nodule measures 2.5 cm .
    assert count_tokens("No pneumothorax.") == 3
    assert count_tokens("___ year-old man's x-ray") == 4
    assert count_tokens("") == 0


def test_splitter_on_sections_of_a_report():
    found = findings_and_impression(REPORT)
    sentences, tokens = RuleSentenceSplitter()(found["findings"])
    assert sentences == [
        "There is no focal consolidation, pleural effusion or pneumothorax.",
        "Bilateral nodular opacities that most likely represent nipple shadows.",
        "The cardiomediastinal silhouette is normal.",
        "Clips project over the left lung, potentially within the breast.",
        "The imaged upper abdomen is unremarkable.",
    ]
    assert tokens > 30


def test_stanza_is_optional_and_never_downloads(tmp_path):
    try:
        import stanza  # noqa: F401
        has_stanza = True
    except ImportError:
        has_stanza = False
    with pytest.raises(RuntimeError, match="stanza"):
        # an empty resources dir: no model, and no download attempted
        StanzaSentenceSplitter(model_dir=str(tmp_path))
    if not has_stanza:
        with pytest.raises(RuntimeError, match="pip install stanza"):
            make_sentence_splitter("stanza")
    assert isinstance(make_sentence_splitter("auto", model_dir=str(tmp_path)), RuleSentenceSplitter)
    assert isinstance(make_sentence_splitter(), RuleSentenceSplitter)
    with pytest.raises(ValueError, match="unknown sentence splitter"):
        make_sentence_splitter("nltk")


def test_stanza_splitter_with_a_local_model(monkeypatch):
    """The stanza path with a stand-in module: tokenize only, CPU, never a download, cleaned sentences."""
    import sys
    import types

    calls = {}

    class Sentence:
        def __init__(self, text):
            self.text = text

    class Pipeline:
        def __init__(self, lang, **kwargs):
            calls.update(lang=lang, **kwargs)

        def __call__(self, text):
            doc = types.SimpleNamespace(sentences=[Sentence(t) for t in text.split("|")])
            doc.num_tokens = len(text.split())
            return doc

    monkeypatch.setitem(sys.modules, "stanza", types.SimpleNamespace(Pipeline=Pipeline))
    splitter = make_sentence_splitter("stanza", model_dir="/models/stanza")
    assert isinstance(splitter, StanzaSentenceSplitter)
    assert calls == {"lang": "en", "processors": "tokenize", "use_gpu": False, "download_method": None,
                     "verbose": False, "dir": "/models/stanza"}
    assert splitter("Heart\n normal.| Lungs  clear.") == (["Heart normal.", "Lungs clear."], 4)
    assert splitter("  ") == ([], 0)
    assert isinstance(make_sentence_splitter("auto"), StanzaSentenceSplitter)
