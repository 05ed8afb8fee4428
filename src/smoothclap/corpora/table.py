"""A corpus table together with what reading it left out."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import SkipLog

#: Column of a manifest's table: the manifest row each table row comes from (1 = first data row).
MANIFEST_ROW = "manifest_row"


@dataclass
class Table:
    """The clips a command works on and what reading them left out.

    rows: the corpus table (standard columns, :data:`~smoothclap.corpora.STANDARD_COLUMNS`).
    skipped: the bad inputs skipped while reading (a :class:`~smoothclap.errors.SkipLog`).
    source: where the rows come from (the manifest file, the corpus folder); errors name it.
    n_rows: a manifest's number of data rows (None for a corpus folder); the kept ones are numbered
        in ``rows["manifest_row"]``.
    row_errors: a manifest's rows left out while reading: row number -> ``"<file>: <reason>"``.
    """

    rows: pd.DataFrame
    skipped: SkipLog
    source: str
    n_rows: int | None = None
    row_errors: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, table: "Table | pd.DataFrame", source: str = "table") -> "Table":
        """``table`` itself, or a DataFrame as a Table that skipped nothing."""
        return table if isinstance(table, Table) else cls(table, SkipLog(), source)

    def with_rows(self, rows: pd.DataFrame) -> "Table":
        """The same reading with other rows (e.g. the rows of one split)."""
        return dataclasses.replace(self, rows=rows)

    def manifest_rows(self) -> np.ndarray | None:
        """``[N]`` manifest row (1-based) of each of ``rows`` when they are every row kept from a
        manifest (so results can be laid out one per manifest row); else None."""
        if self.n_rows is None or MANIFEST_ROW not in self.rows.columns:
            return None
        if len(self.rows) + len(self.row_errors) != self.n_rows:  # rows were dropped after reading
            return None
        return self.rows[MANIFEST_ROW].to_numpy(dtype=int)
