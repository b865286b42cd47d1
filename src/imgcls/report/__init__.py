"""`report.html`: one self-contained page per run (`page.py` builds it from `template.html`)."""

from imgcls.report.page import write_report, write_report_safely

__all__ = ["write_report", "write_report_safely"]
