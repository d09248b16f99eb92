"""ArgRewrite V.2 sentence-level revision purposes (Kashefi et al., 2022), fine-grained.

Source: GitHub omidkashefi/ArgRewrite (CC BY 4.0). Files:
``<data_dir>/argrewrite/dataset/annotations/{A,B,C,D}/{12,23}/Annotation_*.xlsx``, one workbook
per student essay and draft pair (12 = draft 1 -> 2, 23 = draft 2 -> 3); the folder letter is
the study condition. 172 workbooks, 86 students (file ``Annotation_2018argrewrite_<N>...``:
``essay_id`` = ``<N>``, the same in both draft pairs).

How a revision is built
-----------------------
Each workbook has sheets ``Old Draft`` and ``New Draft``, one row per sentence, with
``Revision Purpose Level 0``, ``Revision Operation Level 0`` and ``Revision Index Level 0``
(comma-separated when a sentence takes part in several revisions; Level 1/2 are empty in V.2).
The revision index is shared by every old and new sentence of one revision, so it is the join
key: old sentences with index k form ``before``, new sentences with index k form ``after``
(sentences in sentence order, joined with one space). In this corpus the ``Aligned Index``
agrees with that join for 1705 of the 1715 Modify revision indices; where it does not (10,
6 of them Organization revisions, i.e. moved sentences whose alignment reads ADD/DELETE or
points elsewhere) the revision index wins.
Revision indices that share a sentence are merged into one revision. Add has an empty
``before``, Delete an empty ``after``; ``operation`` is derived from which side is non-empty
and matches the annotated operation for every revision. Identical and unannotated sentences
(no revision index) are skipped: 2293 identical sentence pairs and 11 non-identical
sentences without an annotation.

Observed revisions (3278): Modify 1700, Add 1083, Delete 495. Dropped:
42 revisions whose sentences carry two or three different purposes (e.g. Word-Usage/Clarity
and Warrant/Reasoning/Backing on the same sentence pair; one of them includes
``Unannotated``), because the task is single-label. Kept: 3236 (Modify 1686, Add 1065,
Delete 485).

Purposes of the 3236 single-purpose revisions: Word-Usage/Clarity 1040, General Content
Development 716, Warrant/Reasoning/Backing 613, Conventions/Grammar/Spelling 239,
Claims/Ideas 235, Evidence 200, Precision 85, Organization 65, Rebuttal/Reservation 43.

Label merges (``LABEL_MERGES``): Rebuttal/Reservation (43 revisions, 1.3%) is merged into
Warrant/Reasoning/Backing: both are argumentative reasoning content (a rebuttal reasons
against a counter-argument), the merge stays within the content side of the coarse
scheme, and 43 revisions spread over 86 essays leave only a handful per
validation/test split (37/3/3 with the split below). All other purposes keep their own
label (8 labels). Note the small Precision (4) and Organization (5) counts in test: report
macro scores on this split with that in mind.

Splits: by essay (student), so both draft pairs of a student fall in the same split;
essays are ordered by sha256("argrewrite-split-v1:<essay_id>"), the first 9 go to test,
the next 9 to validation, the remaining 68 to train (~80/10/10 of essays).

Rows per split and label (fine task):

======================================  =====  ==========  ====
label                                   train  validation  test
======================================  =====  ==========  ====
Claims/Ideas                               201          15    19
Warrant/Reasoning/Backing (+Rebuttal)      530          46    80
Evidence                                   141          28    31
General Content Development                538          73   105
Precision                                   66          15     4
Word-Usage/Clarity                         832         132    76
Conventions/Grammar/Spelling               183          26    30
Organization                                49          11     5
rows                                      2540         346   350
essays                                      68           9     9
======================================  =====  ==========  ====

Metadata columns: ``essay_id``, ``draft_pair`` ("12"/"23"), ``condition`` ("A"-"D"),
``operation`` (Add/Delete/Modify), ``purpose`` (the original purpose before merging),
``revision_id`` ("<essay>-<pair>-<revision index>").

Parsing the workbooks takes a few seconds, so the parsed revisions are cached as JSON under
``<cache>/parsed/`` (``benchmark.core.paths.cache_root()``: $BENCHMARK_CACHE_DIR or
``platformdirs.user_cache_dir("revision-benchmark")``), keyed by a fingerprint of the
workbooks (relative paths, sizes, mtimes) and ``PARSER_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

from benchmark.core.errors import UserError
from benchmark.core.paths import cache_root
from tasks.fetch import ARGREWRITE_SUBDIR, annotation_files, fetch_into_default_cache
from tasks.base import (
    SPLITS,
    Task,
    build_dataset_dict,
    missing_data_error,
    one_line,
    register_task,
    resolve_data_dir,
)

PARSER_VERSION = 1
SUBDIR = ARGREWRITE_SUBDIR
EXPECTED_FILES = "argrewrite/dataset/annotations/{A,B,C,D}/{12,23}/Annotation_*.xlsx"
SOURCE = "GitHub omidkashefi/ArgRewrite (ArgRewrite V.2, dataset/annotations)"
SPLIT_SALT = "argrewrite-split-v1"

SHEETS = {"old": "Old Draft", "new": "New Draft"}
COL_INDEX = "Sentence Index"
COL_TEXT = "Sentence Content"
COL_PURPOSE = "Revision Purpose Level 0"
COL_OPERATION = "Revision Operation Level 0"
COL_REVISION = "Revision Index Level 0"
REQUIRED_COLUMNS = (COL_INDEX, COL_TEXT, COL_PURPOSE, COL_OPERATION, COL_REVISION)

#: Sentence-level purposes of ArgRewrite V.2 (README of the corpus).
PURPOSES = (
    "Claims/Ideas",
    "Warrant/Reasoning/Backing",
    "Rebuttal/Reservation",
    "Evidence",
    "General Content Development",
    "Precision",
    "Word-Usage/Clarity",
    "Conventions/Grammar/Spelling",
    "Organization",
)
UNANNOTATED = "Unannotated"

#: Rare purposes folded into a related one (original -> label). Observed count: 43.
LABEL_MERGES = {"Rebuttal/Reservation": "Warrant/Reasoning/Backing"}

FINE_LABELS = tuple(p for p in PURPOSES if p not in LABEL_MERGES)

#: Coarse scheme (see tasks/argrewrite_coarse.py for the rationale).
COARSE_OF_PURPOSE = {
    "Claims/Ideas": "content",
    "Warrant/Reasoning/Backing": "content",
    "Rebuttal/Reservation": "content",
    "Evidence": "content",
    "General Content Development": "content",
    "Precision": "content",
    "Word-Usage/Clarity": "surface",
    "Conventions/Grammar/Spelling": "surface",
    "Organization": "surface",
}

METADATA = {
    "essay_id": "string",
    "draft_pair": "string",
    "condition": "string",
    "operation": "string",
    "purpose": "string",
    "revision_id": "string",
}


# --------------------------------------------------------------------------- parsing


def _split_cell(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    parts = [part.strip() for part in str(value).split(",")]
    parts = [part[:-2] if re.fullmatch(r"\d+\.0", part) else part for part in parts]
    return [part for part in parts if part]


def _sheet_rows(ws, path: Path, sheet: str) -> Iterator[dict[str, Any]]:
    ws.reset_dimensions()  # the workbooks declare a wrong (1x1) dimension
    rows = ws.iter_rows(values_only=True)
    header = next(rows, None)
    if header is None:
        return
    columns = {one_line(h): i for i, h in enumerate(header) if h is not None and one_line(h)}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(f"argrewrite: {path} sheet {sheet!r} lacks column(s) {', '.join(missing)}")

    def cell(row: tuple, col: str) -> Any:
        i = columns[col]
        return row[i] if i < len(row) else None

    for row in rows:
        raw_index = cell(row, COL_INDEX)
        if raw_index is None or str(raw_index).strip() == "":
            continue
        try:
            index = int(float(raw_index))
        except (TypeError, ValueError):
            raise UserError(f"argrewrite: {path} sheet {sheet!r}: bad sentence index {raw_index!r}") from None
        revisions = _split_cell(cell(row, COL_REVISION))
        purposes = _split_cell(cell(row, COL_PURPOSE))
        operations = _split_cell(cell(row, COL_OPERATION))
        if not (len(revisions) == len(purposes) == len(operations)):
            raise UserError(
                f"argrewrite: {path} sheet {sheet!r} sentence {index}: "
                f"{len(revisions)} revision indices but {len(purposes)} purposes and {len(operations)} operations"
            )
        text = cell(row, COL_TEXT)
        yield {
            "index": index,
            "text": "" if text is None else str(text).strip(),
            "annotations": list(zip(revisions, purposes, operations)),
        }


def _sort_key(revision_index: str) -> tuple:
    return (0, int(revision_index), "") if revision_index.isdigit() else (1, 0, revision_index)


def parse_workbook(path: Path, annotations_dir: Path) -> list[dict[str, Any]]:
    """All revisions of one workbook (before merges and filtering)."""
    import openpyxl

    rel = path.relative_to(annotations_dir)
    match = re.search(r"argrewrite_(\d+)", path.name)
    if match is None or len(rel.parts) != 3:
        raise UserError(
            f"argrewrite: cannot tell the essay from {rel}; expected {EXPECTED_FILES} "
            f"named like Annotation_2018argrewrite_<N>_NEW.txt.xlsx"
        )
    essay_id, condition, draft_pair = match.group(1), rel.parts[0], rel.parts[1]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Workbook contains no default style"
            wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException, OSError...
        raise UserError(f"argrewrite: cannot read workbook {path}: {one_line(exc) or type(exc).__name__}") from None
    try:
        sentences: dict[str, dict[int, str]] = {"old": {}, "new": {}}
        members: dict[str, list[tuple[str, int, str, str]]] = {}
        for side, sheet in SHEETS.items():
            if sheet not in wb.sheetnames:
                raise UserError(f"argrewrite: {path} has no sheet {sheet!r} (sheets: {', '.join(wb.sheetnames)})")
            for row in _sheet_rows(wb[sheet], path, sheet):
                sentences[side][row["index"]] = row["text"]
                for rev, purpose, operation in row["annotations"]:
                    members.setdefault(rev, []).append((side, row["index"], purpose, operation))
    finally:
        wb.close()

    # Revision indices that share a sentence describe one revision: union them.
    parent: dict[str, str] = {rev: rev for rev in members}

    def find(rev: str) -> str:
        while parent[rev] != rev:
            parent[rev] = parent[parent[rev]]
            rev = parent[rev]
        return rev

    owner: dict[tuple[str, int], str] = {}
    for rev in sorted(members, key=_sort_key):
        for side, index, _, _ in members[rev]:
            other = owner.setdefault((side, index), rev)
            if other != rev:
                a, b = sorted((find(other), find(rev)), key=_sort_key)
                parent[b] = a
    groups: dict[str, list[str]] = {}
    for rev in sorted(members, key=_sort_key):
        groups.setdefault(find(rev), []).append(rev)

    revisions = []
    for revs in groups.values():
        old: set[int] = set()
        new: set[int] = set()
        purposes: list[str] = []
        operations: list[str] = []
        for rev in revs:
            for side, index, purpose, operation in members[rev]:
                (old if side == "old" else new).add(index)
                if purpose not in purposes:
                    purposes.append(purpose)
                if operation.capitalize() not in operations:
                    operations.append(operation.capitalize())
        before = " ".join(t for t in (sentences["old"][i] for i in sorted(old)) if t)
        after = " ".join(t for t in (sentences["new"][i] for i in sorted(new)) if t)
        operation = "Modify" if old and new else ("Delete" if old else "Add")
        revisions.append(
            {
                "essay_id": essay_id,
                "condition": condition,
                "draft_pair": draft_pair,
                "revision_id": f"{essay_id}-{draft_pair}-{'+'.join(revs)}",
                "operation": operation,
                "annotated_operations": operations,
                "purposes": purposes,
                "before": before if old else "",
                "after": after if new else "",
                "old_sentences": sorted(old),
                "new_sentences": sorted(new),
            }
        )
    return revisions


def _fingerprint(files: list[Path], annotations_dir: Path) -> str:
    digest = hashlib.sha256(f"argrewrite-parser-v{PARSER_VERSION}\n".encode())
    for path in files:
        st = path.stat()
        digest.update(f"{path.relative_to(annotations_dir).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def parsed_revisions(annotations_dir: Path, use_cache: bool = True) -> list[dict[str, Any]]:
    """Every revision of the corpus, from the JSON cache when the workbooks are unchanged."""
    files = annotation_files(annotations_dir)
    if not files:
        return []
    fingerprint = _fingerprint(files, annotations_dir)
    cache_file = cache_root() / "parsed" / f"argrewrite-v{PARSER_VERSION}-{fingerprint[:20]}.json"
    if use_cache:
        try:
            cached = json.loads(cache_file.read_text(encoding="utf-8"))
            if cached.get("fingerprint") == fingerprint and cached.get("parser_version") == PARSER_VERSION:
                return cached["revisions"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # no cache yet, or an unreadable one: parse again

    revisions = [rev for path in files for rev in parse_workbook(path, annotations_dir)]
    # Stable sort: within a workbook, revisions stay in order of their first revision index.
    revisions.sort(key=lambda r: (int(r["essay_id"]), r["draft_pair"], r["condition"]))

    if use_cache:
        payload = {"parser_version": PARSER_VERSION, "fingerprint": fingerprint, "revisions": revisions}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, cache_file)
            for stale in cache_file.parent.glob("argrewrite-v*.json"):
                if stale != cache_file:
                    stale.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only cache only costs the parse time next call
    return revisions


def essay_splits(essay_ids: set[str] | list[str]) -> dict[str, str]:
    """Deterministic essay -> split: order by salted sha256, ~10% test, ~10% validation, rest train."""
    ordered = sorted(set(essay_ids), key=lambda e: (hashlib.sha256(f"{SPLIT_SALT}:{e}".encode()).hexdigest(), e))
    n = len(ordered)
    n_eval = round(0.1 * n) if n >= 10 else (1 if n >= 3 else 0)
    assignment = {}
    for rank, essay in enumerate(ordered):
        assignment[essay] = "test" if rank < n_eval else ("validation" if rank < 2 * n_eval else "train")
    return assignment


# --------------------------------------------------------------------------- tasks


class _ArgRewriteBase(Task):
    source = f"{SOURCE}; CC BY 4.0"
    #: original purpose -> label name; set by subclasses.
    label_of_purpose: dict[str, str] = {}

    id_column = "revision_id"

    def check_data(self, data_dir=None) -> None:
        root = resolve_data_dir(data_dir)
        if not annotation_files(root / SUBDIR) and not fetch_into_default_cache(self.name, data_dir):
            raise missing_data_error(self.name, EXPECTED_FILES, root, SOURCE)

    def load(self, data_dir=None):
        self.check_data(data_dir)
        revisions = parsed_revisions(resolve_data_dir(data_dir) / SUBDIR)
        split_of = essay_splits({r["essay_id"] for r in revisions})
        label_ids = {name: i for i, name in enumerate(self.label_names)}
        columns = {s: {c: [] for c in ("before", "after", "label", *METADATA)} for s in SPLITS}
        for rev in revisions:
            if len(rev["purposes"]) != 1:
                continue  # several purposes on the same sentences: not single-label
            purpose = rev["purposes"][0]
            if purpose == UNANNOTATED:
                continue
            if purpose not in self.label_of_purpose:
                raise UserError(
                    f"{self.name}: unknown revision purpose {purpose!r} in essay {rev['essay_id']} "
                    f"draft pair {rev['draft_pair']}; known: {', '.join(PURPOSES)}"
                )
            cols = columns[split_of[rev["essay_id"]]]
            cols["before"].append(rev["before"])
            cols["after"].append(rev["after"])
            cols["label"].append(label_ids[self.label_of_purpose[purpose]])
            cols["purpose"].append(purpose)
            for key in ("essay_id", "draft_pair", "condition", "operation", "revision_id"):
                cols[key].append(rev[key])
        return build_dataset_dict(columns, self.label_names, METADATA)


@register_task
class ArgRewriteTask(_ArgRewriteBase):
    name = "argrewrite"
    label_names = FINE_LABELS
    label_of_purpose = {p: LABEL_MERGES.get(p, p) for p in PURPOSES}
    description = "ArgRewrite V.2 sentence-level revision purposes (8 classes; Rebuttal merged into Warrant), essay-level splits."
    task_instruction = (
        "Identify the purpose of the revision between the original sentences and the revised sentences "
        "of a student's argumentative essay."
    )
