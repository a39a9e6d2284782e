"""Reports built from measurements: `compare` trains methods on one task and recommends one."""

from softprompt.report.compare import Constraints, Measurement, Recommendation, measure, recommend, write_report

__all__ = ["Constraints", "Measurement", "Recommendation", "measure", "recommend", "write_report"]
