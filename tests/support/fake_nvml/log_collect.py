"""The log records of a stand-in run, as [level, message] pairs the test reads back (the driver
scripts beside this file run as their own processes and print them as JSON)."""

from __future__ import annotations

import logging


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append([record.levelname, record.getMessage()])
