"""The comparison report (``kfr-report``): sweep results in the paper's table layouts.

- :mod:`kfr.report.collect`: cell folders -> flat records;
- :mod:`kfr.report.tables`: seeds aggregated, the paper's layouts, missing positions;
- :mod:`kfr.report.paper`: the published numbers (Table 1 and Table 2);
- :mod:`kfr.report.plots`: accuracy vs paraphrases and vs K;
- :mod:`kfr.report.build`: all of it into report.md, CSV files and PNGs.
"""

from kfr.report.build import Report, build_report, write_report

__all__ = ["Report", "build_report", "write_report"]
