"""The comparison report (``kfr-report``): sweep results in the paper's table layouts.

- :mod:`kfr.report.collect`: cell folders -> flat records (per-question records read lazily);
- :mod:`kfr.report.stats`: the two-level bootstrap (knowledge bases, seeds, questions) and the
  Student t interval over seeds of older cells;
- :mod:`kfr.report.intervals`: every number's 95% interval, paired differences, their text;
- :mod:`kfr.report.aggregates`: cells aggregated over seeds, the best one for a table position;
- :mod:`kfr.report.layouts`: the paper's table layouts and curves, missing positions;
- :mod:`kfr.report.render`: the text and CSV record of each position, markdown tables;
- :mod:`kfr.report.paper`: the published numbers (Table 1 and Table 2);
- :mod:`kfr.report.arms`: every knowledge-injection arm side by side (+ a column per probe family);
- :mod:`kfr.report.probes`: the best arm per probe family, its margin and McNemar p;
- :mod:`kfr.report.diagnostics`: every arm per probe family with PMI accuracy and diagnostics;
- :mod:`kfr.report.plots`: accuracy vs paraphrases, vs K, vs training tokens and vs forgetting;
- :mod:`kfr.report.build`: all of it into report.md, CSV files and PNGs.
"""

from kfr.report.build import Report, build_report, write_report

__all__ = ["Report", "build_report", "write_report"]
