"""Claim reports: the run document (claims.json) and its views (Markdown, HTML, JUnit, plots)."""

from harness.report.document import ClaimsRun, Figure, load_claims, run_provenance
from harness.report.writers import write_reports

__all__ = ["ClaimsRun", "Figure", "load_claims", "run_provenance", "write_reports"]
