"""ipywidgets panels for the notebooks: thin front ends that collect input, call :class:`~labkit.Lab`
and show the answer (with the tables and notes of :mod:`labkit.presenters`, as the CLI prints them).

Each panel keeps its widgets as attributes (``panel.text.value = "1 5 22"``) and its actions as public
methods (``panel.send()``, ``panel.purge()``), which is what the buttons call. Called from a cell, an
action shows its output under that cell; from a button, in the panel's ``out`` area. Notebooks run
unattended (papermill, ``interactive = False``) call the same methods the buttons do.

    panel = NumbersPanel(lab)
    display(panel)                   # in JupyterLab: type numbers, pick preset or random, press Send
    result = panel.send()            # or the same action from code

A new panel goes in the module of its subject (setup, numbers, images), built on :class:`Panel`.
"""

from labkit.jobs.numbers import PRESET
from labkit.local import BACKENDS, resolve_backend
from labkit.presenters import Note, Table, status_tables
from labkit.samples import SAMPLES, sample_image
from labkit.widgets.base import Panel, bundle
from labkit.widgets.images import ImagePanel, format_ops
from labkit.widgets.live import LiveDepth
from labkit.widgets.numbers import BatchPanel, BatchResult, NumbersPanel
from labkit.widgets.setup import SetupPanel, TeardownPanel

__all__ = ["BACKENDS", "PRESET", "SAMPLES", "BatchPanel", "BatchResult", "ImagePanel", "LiveDepth", "Note",
           "NumbersPanel", "Panel", "SetupPanel", "Table", "TeardownPanel", "bundle", "format_ops", "resolve_backend",
           "sample_image", "status_tables"]
