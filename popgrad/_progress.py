"""Progress bars: tqdm's notebook-aware bar inside IPython/Jupyter, its plain terminal bar elsewhere.

``tqdm.auto`` imports asyncio (0.13 s) to decide between the two; the command line never needs it."""

from __future__ import annotations

import sys


def progress_bar(iterable=None, *, progress: bool | None = False, **options):
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``), shown when ``progress`` is True,
    hidden when False, and only on a terminal when None (tqdm's ``disable=None``)."""
    if progress is not None and not isinstance(progress, bool):
        from ._validation import InvalidArgumentType

        # a string such as 'yes' or 'no' would count as true: refuse it rather than guess
        raise InvalidArgumentType(f"progress must be True, False or None (only on a terminal), got {progress!r}", "progress")
    if "IPython" in sys.modules:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(iterable, disable=None if progress is None else not progress, leave=False, **options)
