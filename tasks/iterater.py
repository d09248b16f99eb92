"""IteraTeR, human-annotated sentence level (Du et al., 2022), as in the IR-Tuning setting.

Files: ``<data_dir>/iterater/human_sent_level/{train,dev,test}.json`` (JSON Lines with
``before_sent``, ``after_sent``, ``labels``, ``doc_id``, ``revision_depth``), from the HF hub
dataset ``wanyu/IteraTeR_human_sent`` (= GitHub vipulraheja/IteraTeR,
``dataset/human_sent_level.zip``), Apache-2.0.

Published splits are kept (dev -> validation); rows labelled ``others`` are dropped, leaving
five labels. ``before``/``after`` are the sentences with surrounding whitespace stripped.

Rows per split (after dropping ``others``):

=========== ===== ======= ======= ========= ===== ===============
split       rows  clarity fluency coherence style meaning-changed
=========== ===== ======= ======= ========= ===== ===============
train       3215  1258    739     311       100   807
validation   385   157    115      46        13    54
test         360   186     88      36        15    35
=========== ===== ======= ======= ========= ===== ===============

Metadata columns: ``id`` (``<file>:<line>``, e.g. ``test.json:12``: stable across runs, so
test predictions pair up by example), ``doc_id`` (str), ``revision_depth`` (int).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmark.core.errors import UserError
from tasks.fetch import fetch_into_default_cache
from tasks.base import SPLITS, Task, build_dataset_dict, missing_data_error, register_task, resolve_data_dir

SUBDIR = Path("iterater") / "human_sent_level"
SPLIT_FILES = {"train": "train.json", "validation": "dev.json", "test": "test.json"}
DROPPED_LABELS = frozenset({"others"})


@register_task
class IteraTeRTask(Task):
    name = "iterater"
    label_names = ("clarity", "fluency", "coherence", "style", "meaning-changed")
    description = "IteraTeR human sentence-level edit intentions (5 classes, 'others' dropped; 3215/385/360)."
    source = "HF hub dataset wanyu/IteraTeR_human_sent (GitHub vipulraheja/IteraTeR, dataset/human_sent_level.zip)"
    task_instruction = "Identify the intention of the revision between the original sentence and the revised sentence."

    def files(self, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
        root = resolve_data_dir(data_dir) / SUBDIR
        return {split: root / fname for split, fname in SPLIT_FILES.items()}

    def check_data(self, data_dir=None) -> None:
        files = self.files(data_dir)
        missing = [p for p in files.values() if not p.is_file()]
        if missing and fetch_into_default_cache(self.name, data_dir):
            missing = []
        if missing:
            root = resolve_data_dir(data_dir)
            expected = ", ".join(str(SUBDIR / SPLIT_FILES[s]) for s in SPLITS)
            raise missing_data_error(self.name, expected, root, self.source)

    def load(self, data_dir=None):
        self.check_data(data_dir)
        files = self.files(data_dir)
        columns = {split: self._read(files[split]) for split in SPLITS}
        return build_dataset_dict(columns, self.label_names,
                                  {"id": "string", "doc_id": "string", "revision_depth": "int32"})

    def _read(self, path: Path) -> dict[str, list]:
        label_ids = {name: i for i, name in enumerate(self.label_names)}
        cols: dict[str, list] = {"before": [], "after": [], "label": [], "id": [], "doc_id": [],
                                 "revision_depth": []}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.name}: cannot read {path}: {exc}") from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                label = row["labels"]
                before, after = row["before_sent"], row["after_sent"]
                doc_id, depth = row["doc_id"], row["revision_depth"]
            except json.JSONDecodeError as exc:
                raise UserError(f"{self.name}: {path}:{lineno}: invalid JSON ({exc.msg})") from None
            except (KeyError, TypeError) as exc:
                raise UserError(f"{self.name}: {path}:{lineno}: missing field {exc}") from None
            if label in DROPPED_LABELS:
                continue
            if label not in label_ids:
                raise UserError(f"{self.name}: {path}:{lineno}: unknown label {label!r}")
            try:
                depth = int(depth)
            except (TypeError, ValueError):
                raise UserError(f"{self.name}: {path}:{lineno}: revision_depth {depth!r} is not an integer") from None
            cols["before"].append(str(before or "").strip())
            cols["after"].append(str(after or "").strip())
            cols["label"].append(label_ids[label])
            cols["id"].append(f"{path.name}:{lineno}")  # the row's line in the published file
            cols["doc_id"].append(str(doc_id))
            cols["revision_depth"].append(depth)
        return cols
