"""The quarantine table every data stage appends to: one row per photo left out, with its reason.

relative_path   the photo (<identity>/<photo>)
stage           the stage that left it out: ingest, validate, prepare
check           which check failed
reason          in words
source_uri      where the photo came from (None where unknown)
"""

from __future__ import annotations

import pandas as pd

QUARANTINE_COLUMNS = ["relative_path", "stage", "check", "reason", "source_uri"]


def quarantine_table(rows: list[dict]) -> pd.DataFrame:
    """The rows (dicts keyed by QUARANTINE_COLUMNS) as a quarantine table, columns in order (also when empty)."""
    return pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
