"""ArgRewrite V.2, coarse purposes: surface vs content.

Same rows, splits and metadata as the ``argrewrite`` task (see tasks/argrewrite.py for how
revisions are built and which are dropped); only the label differs.

Scheme: the ArgRewrite papers split revision purposes into surface revisions (form only, the
information conveyed is unchanged) and content revisions. The grouping used here is the one
attributed to the ArgRewrite V.2 paper (Kashefi et al., 2022); its full text could not be
consulted offline when this module was written:

- surface: Word-Usage/Clarity, Conventions/Grammar/Spelling, Organization
- content: Claims/Ideas, Warrant/Reasoning/Backing, Rebuttal/Reservation, Evidence,
  General Content Development, Precision

Precision is the debatable one: it makes a statement more exact or
specific, which changes what is asserted, so it counts as content here; note that an
annotator-agreement script from the ArgRewrite pilot study (public on GitHub) lists it with
the surface purposes. Flip it in ``COARSE_OF_PURPOSE`` (tasks/argrewrite.py) if needed;
Precision is 85 of the 3236 revisions.

Rows per split and label:

=======  =====  ==========  ====
label    train  validation  test
=======  =====  ==========  ====
surface   1064         169   111
content   1476         177   239
rows      2540         346   350
=======  =====  ==========  ====
"""

from __future__ import annotations

from tasks.argrewrite import COARSE_OF_PURPOSE, PURPOSES, _ArgRewriteBase
from tasks.base import register_task

COARSE_LABELS = ("surface", "content")


@register_task
class ArgRewriteCoarseTask(_ArgRewriteBase):
    name = "argrewrite-coarse"
    label_names = COARSE_LABELS
    label_of_purpose = {p: COARSE_OF_PURPOSE[p] for p in PURPOSES}
    description = "ArgRewrite V.2 sentence-level revisions, surface vs content (same rows and splits as argrewrite)."
    task_instruction = (
        "Decide whether the revision between the original sentences and the revised sentences "
        "of a student's argumentative essay is a surface revision or a content revision."
    )
