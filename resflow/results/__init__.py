"""Results: the tidy-table schema and `RunResult` (tables.py), statistics over seeds and layers
(stats.py), run metadata (meta.py), and results dirs on disk (files.py, csvtext.py).

Pandas only: never torch, so the report layer can read results without it.
"""

from resflow.results.files import check_out_dir, is_results_dir, read_run, write_csv, write_run
from resflow.results.tables import RunResult

__all__ = ["RunResult", "check_out_dir", "is_results_dir", "read_run", "write_csv", "write_run"]
