"""The experiment set behind ``docs/results.md`` (``pairzero results``).

* :mod:`pairzero.results.runner` -- runs the missing points and writes the report
  (:func:`run_results`, :func:`cmd_results`);
* :mod:`pairzero.results.experiments` -- the presets, the plan of parameter points, one runner
  per kind of point;
* :mod:`pairzero.results.store` -- one result file per point;
* :mod:`pairzero.results.report` -- the report and its figures, from the result files alone.
"""

from pairzero.results.runner import DEFAULT_OUT, DEFAULT_REPORT, SECTIONS, cmd_results, run_results

__all__ = ["run_results", "cmd_results", "SECTIONS", "DEFAULT_OUT", "DEFAULT_REPORT"]
