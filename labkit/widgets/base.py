"""The base of the panels: an output area, and actions that show there when a button runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W

from labkit import plots
from labkit.errors import LabkitError
from labkit.presenters import Note


def bundle(item: Any) -> dict[str, str]:
    """The display bundle for a Table, a Message, a figure or anything printable."""
    from matplotlib.figure import Figure
    if isinstance(item, Figure):
        return plots.mime_bundle(item)
    if hasattr(item, "_repr_mimebundle_"):
        return item._repr_mimebundle_()
    return {"text/plain": str(item)}


class Panel:
    """Base of the panels: an ``out`` area, and actions that show there when a button runs them."""

    def __init__(self) -> None:
        self.out = W.Output()
        self._to_widget = False
        self.box: W.Widget = W.VBox([self.out])

    def show(self, *items: Any) -> None:
        """Display items under the running cell, or in ``out`` while a button's action runs."""
        for item in items:
            data = bundle(item)
            if self._to_widget:
                self.out.outputs += ({"output_type": "display_data", "data": data, "metadata": {}},)
            else:
                from IPython.display import display
                display(data, raw=True)

    def clear(self) -> None:
        self.out.outputs = ()

    def _button(self, button: W.Button, action: Callable[[], Any]) -> None:
        """Run ``action`` when ``button`` is clicked; errors become a red line in ``out``."""
        def on_click(_: W.Button) -> None:
            self.clear()
            self._to_widget = True
            button.disabled = True
            try:
                action()
            except LabkitError as exc:
                self.show(Note(str(exc), "error"))
            except Exception as exc:  # a button must never fail silently: show what went wrong
                self.show(Note(f"{type(exc).__name__}: {exc}", "error"))
            finally:
                button.disabled = False
                self._to_widget = False
        button.on_click(on_click)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.box)
