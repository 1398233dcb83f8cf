"""Progress lines a command holds back while it checks its input.

A command rejected before its MLflow run exists answers with one line (`pgsweep: error:
...`), not with the INFO lines its checks logged on the way (the data it loaded, what it
read from a model's record). So, on the console, lines below WARNING wait until the run
starts (`release_held`, called when a run is created) and are then printed in order;
Hydra's job log file gets every line as it comes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class HeldLines(logging.Filter):
    """A console handler's filter that keeps INFO and DEBUG records back until released."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        super().__init__()
        self.handlers = handlers
        self.records: list[logging.LogRecord] = []
        self.released = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        self.records.append(record)
        return False

    def detach(self) -> None:
        for handler in self.handlers:
            handler.removeFilter(self)

    def release(self) -> None:
        self.detach()
        self.released = True
        kept, self.records = self.records, []
        for record in kept:
            for handler in self.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


_held: HeldLines | None = None


@contextmanager
def held_until_run_starts() -> Iterator[HeldLines]:
    """Hold the console's INFO lines until release_held(); dropped if the command stops first."""
    global _held
    consoles = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    held = HeldLines(consoles)
    for handler in consoles:
        handler.addFilter(held)
    _held = held
    try:
        yield held
    finally:
        _held = None
        held.detach()


def release_held() -> None:
    """The command's run starts: print the lines held back so far, and stop holding."""
    global _held
    held, _held = _held, None
    if held is not None:
        held.release()


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """'1 shard', '3 shards', '1 criterion', '2 criteria': a count with its noun in the right number."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
