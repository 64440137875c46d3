"""Section parser for MIMIC-CXR free-text reports.

Follows the rules of the MIT-LCP MIMIC-CXR section parser that LoVT uses (written anew here):

- a header is a run of capitals, spaces and ``()/,-`` at the start of a line that begins with one space,
  followed by a colon and whitespace (``"\\n FINDINGS: "``); lower-case headers are not headers;
- the text before the first header is the ``preamble``; a report without headers is one ``full report``;
- after a header, the search for the next one starts at the next line break (avoids bad parses of
  headers that run on within a line);
- raw names are lower-cased and normalised (misspellings, "conclusion" -> impression, "findings and
  impression" -> impression, names containing "chest", "portable", "pa and lateral", ... -> findings);
- empty findings / impression sections are dropped; with neither, the last paragraph becomes
  ``last_paragraph``.

`findings_and_impression` is the rule LoVT builds its reports from: studies in the parser's custom-rule
tables are skipped, a report with neither section is skipped, a missing section is an empty string and
a repeated section keeps its last occurrence.
"""

import re
from typing import NamedTuple

# one space after the line break, capitals, colon, whitespace
_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)


class Section(NamedTuple):
    name: str  # normalised name ("findings", "impression", "preamble", ...)
    text: str  # raw text of the section, header excluded
    start: int  # character offset of `text` in the report


# raw (lower-cased) header -> normalised name; counts in MIMIC-CXR decide what is listed
_NAME_TABLE = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    # misspellings seen in MIMIC-CXR ("ndication" maps to impression in the reference parser, kept)
    "ndication": "impression",
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}

# a name containing one of these words is that section ("final impression" -> impression)
_MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")

# headers that describe the whole study ("CHEST, PA AND LATERAL:") introduce the findings
_FINDINGS_LIKE = re.compile(
    "(chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views"
    "|frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright"
    "|frontal semi-upright|ribs|pa and lat)"
)

# Studies the reference parser handles with hand-written rules (custom names or character ranges);
# LoVT skips all of them.
CUSTOM_RULE_STUDIES = frozenset(
    # custom section names
    "s50913680 s59363654 s59279892 s59768032 s57936451 s50058765 s53356173 s53202765 s50808053 "
    "s51966317 s50743547 s56451190 s59067458 s59215320 s55124749 s54365831 s59087630 s58157373 "
    "s56482935 s58375018 s54654948 s55157853 s51491012 "
    # custom character ranges (the last eight have no findings at all)
    "s50525523 s57564132 s59982525 s53488209 s54875119 s50196495 s56579911 s52648681 s59889364 "
    "s53514462 s59505494 s53182247 s51410602 s56412866 s54986978 s59003148 s57150433 s56760320 "
    "s59562049 s52674888 s55258338 s59330497 s52119491 s58235663 s50798377 s54168089 s53071062 "
    "s56724958 s54231141 s53607029 s52035334".split()
)


def normalize_section_name(raw: str) -> str:
    name = raw.lower().strip()
    if name in _NAME_TABLE:
        return _NAME_TABLE[name]
    for main in _MAIN_SECTIONS:
        if main in name:
            return main
    return "findings" if _FINDINGS_LIKE.search(name) else name


def split_sections(report: str) -> list[Section]:
    """All sections of `report` in order, with normalised names (see the module docstring)."""
    match = _HEADER.search(report)
    if match is None:
        sections = [Section("full report", report, 0)]
    else:
        sections = [Section("preamble", report[: match.start(1)], 0)]
        while match is not None:
            raw_name, body_start = match.group(1), match.end()
            line_end = report.find("\n", body_start)
            nxt = _HEADER.search(report, line_end if line_end != -1 else body_start)
            body_end = nxt.start() if nxt is not None else len(report)
            sections.append(Section(raw_name, report[body_start:body_end], body_start))
            match = nxt
    sections = [s._replace(name=normalize_section_name(s.name)) for s in sections]

    # an empty findings/impression is a title line ("CHEST, PA LATERAL:") or a duplicate: drop it
    sections = [s for s in sections if not (s.name in ("findings", "impression") and not s.text.strip())]

    names = {s.name for s in sections}
    if "findings" not in names and "impression" not in names and "\n \n" in sections[-1].text:
        last = sections[-1]
        head, *rest = last.text.split("\n \n")
        sections[-1] = last._replace(text=head)
        sections.append(Section("last_paragraph", "\n \n".join(rest), last.start + len(head)))
    return sections


def findings_and_impression(report: str, study: str | None = None) -> dict | None:
    """{"findings": str, "impression": str} of a report, or None when LoVT skips the study.

    study: "s<study_id>", checked against the custom-rule studies the original skips.
    A missing section is "", a repeated one keeps its last occurrence.
    """
    if study is not None and study in CUSTOM_RULE_STUDIES:
        return None
    sections = split_sections(report)
    found = {"findings": "", "impression": ""}
    any_found = False
    for section in sections:
        if section.name in found:
            found[section.name] = section.text
            any_found = True
    return found if any_found else None
