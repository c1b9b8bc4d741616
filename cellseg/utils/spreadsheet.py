"""CSV files that open safely in a spreadsheet: no field is read as a formula.

Excel, LibreOffice and Google Sheets evaluate a cell whose text starts with ``=``, ``+``, ``-``
or ``@`` (and treat a leading tab or carriage return the same way), so a class name from
``classes.txt`` or an image named ``=1+1.png`` written as it is into a CSV would run as a
formula when the file is opened (CSV injection). OWASP's rule is applied to every text field:
such a field gets a single quote in front, which the spreadsheet shows as text and does not
display. Numbers are left as they are: ``-1.5`` stays a number.

Every CSV cellseg writes goes through :func:`spreadsheet_safe`, most simply through
:class:`SafeDictWriter` (``csv.DictWriter`` with the rule applied to the header and every
value).
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import Any

# OWASP "CSV Injection": the characters a spreadsheet reads as the start of a formula
FORMULA_STARTS = ('=', '+', '-', '@', '\t', '\r')


def spreadsheet_safe(value: Any) -> Any:
    """``value`` with a single quote in front when it is text starting with one of
    ``FORMULA_STARTS``; any other value (numbers included, negative ones too) as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_safe_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A CSV row (column -> value) with :func:`spreadsheet_safe` applied to every value."""
    return {k: spreadsheet_safe(v) for k, v in row.items()}


class SafeDictWriter(csv.DictWriter):
    """``csv.DictWriter`` whose header and values go through :func:`spreadsheet_safe`; rows are
    matched to the columns by their original (unescaped) names."""

    def writeheader(self) -> Any:
        return self.writer.writerow([spreadsheet_safe(name) for name in self.fieldnames])

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow(spreadsheet_safe_row(rowdict))

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        for row in rowdicts:
            self.writerow(row)
