"""Lightning's CSVLogger, continued instead of emptied when the run folder already holds a metrics.csv.

Lightning's writer deletes an existing metrics.csv as soon as the folder is not empty, so `resume=...` lost
every row logged before the interruption. Here the file is continued: on resume, `lovt/train.py` first drops
the rows logged at or after the checkpoint's step (the resumed run logs them again), and a fresh run moves an
older metrics.csv aside, so logs of two runs never mix and nothing is deleted.
"""
import csv
import os

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):  # appended to, with its own header order
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """CSVLogger (same arguments and files) whose metrics.csv survives a resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
