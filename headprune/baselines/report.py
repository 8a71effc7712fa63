"""Deprecated: moved to :mod:`headprune.defenses.report`."""

from headprune.defenses.report import PLOT_FILE, markdown_report, plot_curve, write_report

__all__ = ["PLOT_FILE", "markdown_report", "plot_curve", "write_report"]
