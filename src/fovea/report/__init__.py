"""Plots and the self-contained ``report.html`` of a run directory."""

from fovea.report.html import final_metrics, write_report
from fovea.report.plots import (
    ReportError,
    plot_confusion,
    plot_curves,
    plot_image_grid,
    read_metrics,
    save_image,
)

__all__ = [
    "ReportError",
    "final_metrics",
    "plot_confusion",
    "plot_curves",
    "plot_image_grid",
    "read_metrics",
    "save_image",
    "write_report",
]
