"""A queue-depth plot that redraws itself while work runs: give :meth:`LiveDepth.update` to a
:class:`~labkit.watcher.QueueWatcher` as its ``on_sample``.

    with LiveDepth("Queue depth while the batch runs", show=interactive) as live:   # shown under the cell
        with QueueWatcher.for_lane(lab, on_sample=live.update):
            lab.numbers_many(lists)
    # hidden once the block ends: the finished figure is shown instead

It draws only once it has been displayed (an unattended run spends nothing on it), at most once every
``every`` seconds, from the watcher's thread: a frame that fails to draw is skipped, never raised into the
watcher (which would stop sampling). A panel puts ``image`` in its own box instead (:class:`BatchPanel`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as W

from labkit import plots

log = logging.getLogger(__name__)


class LiveDepth:
    """An image of the queue's depth, redrawn from the watcher's samples about once a second."""

    def __init__(self, title: str = "Queue depth", every: float = 1.0, show: bool = False) -> None:
        self.title = title
        self.show_on_enter = show  # display it when a ``with`` block starts (a notebook cell, interactive)
        self.every = every
        self.image = W.Image(format="png", layout=W.Layout(display="none", width="800px", height="auto"))
        self.image.add_class("labkit-live-depth")
        self.shown = False  # set when displayed: only then is drawing worth it
        self.frames = 0  # frames drawn (tests, and a curious reader)
        self._last = float("-inf")
        self._lock = threading.Lock()

    def update(self, samples: Sequence[Any]) -> None:
        """Redraw from ``samples`` (``QueueWatcher.on_sample``), unless a frame was drawn less than
        ``every`` seconds ago."""
        if not self.shown or not samples:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.every:
                return
            self._last = now
        try:
            png = plots.png_bytes(plots.queue_depth_figure(list(samples), f"{self.title} (live)"))
        except Exception as exc:  # one frame missed, the batch and the watcher go on
            log.debug("live depth frame skipped: %s", exc)
            return
        self.image.value = png
        self.image.layout.display = "block"
        self.frames += 1

    def hide(self) -> None:
        """Hide the live image (the work is over: its finished figure takes over) and allow a new first frame."""
        self.image.layout.display = "none"
        self._last = float("-inf")

    def __enter__(self) -> LiveDepth:
        if self.show_on_enter:
            self._ipython_display_()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hide()

    def _ipython_display_(self) -> None:
        from IPython.display import display
        self.shown = True
        display(self.image)
