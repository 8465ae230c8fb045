"""The base of the panels: an output area, a busy line, actions that show there when a button runs them,
number boxes that say when a value is out of range, and the Lab a panel keeps alive."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from labkit import plots
from labkit.client import Lab
from labkit.errors import AwsError, InvalidInput, JobTimeout, LabkitError
from labkit.presenters import Note

# Descriptions as wide as their text, so that no label is cut ("local work…").
LABELS = {"description_width": "initial"}
TOGGLES = {"button_width": "auto", "description_width": "initial"}  # toggle buttons as wide as their text


def bundle(item: Any) -> dict[str, str]:
    """The display bundle for a Table, a Message, a figure or anything printable."""
    from matplotlib.figure import Figure
    if isinstance(item, Figure):
        return plots.mime_bundle(item)
    if hasattr(item, "_repr_mimebundle_"):
        return item._repr_mimebundle_()
    return {"text/plain": str(item)}


class IntField(W.IntText):
    """A whole-number box with a range it checks when read: ipywidgets' bounded boxes silently clamp a
    value out of range (0 became 1), this one says so."""

    def __init__(self, value: int, lo: int, hi: int | None, description: str, **kwargs: Any) -> None:
        tip = f"{description}: {lo:,} or more" if hi is None else f"{description}: {lo:,} to {hi:,}"
        super().__init__(value=value, description=description, style=LABELS, tooltip=kwargs.pop("tooltip", tip),
                         **kwargs)
        self.lo, self.hi = lo, hi

    def checked(self, name: str | None = None) -> int:
        """The value; :class:`InvalidInput` naming the range when it is out of it."""
        return check_range(self.value, self.lo, self.hi, name or self.description)


class FloatField(W.FloatText):
    """A number box with a range it checks when read (see :class:`IntField`)."""

    def __init__(self, value: float, lo: float | None, hi: float | None, description: str, **kwargs: Any) -> None:
        super().__init__(value=value, description=description, style=LABELS, **kwargs)
        self.lo, self.hi = lo, hi

    def checked(self, name: str | None = None) -> float:
        return check_range(self.value, self.lo, self.hi, name or self.description)


def check_range(value: Any, lo: Any, hi: Any, name: str) -> Any:
    """``value`` when ``lo <= value <= hi`` (either bound may be None), else :class:`InvalidInput`
    ("length must be between 1 and 10,000,000, got 0")."""
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return value
    if lo is not None and hi is not None:
        expected = f"between {lo:,} and {hi:,}"
    else:
        expected = f"at least {lo:,}" if lo is not None else f"at most {hi:,}"
    raise InvalidInput(f"{name} must be {expected}, got {value:,}")


def busy_html(text: str) -> str:
    """A spinner and what runs, for a panel's busy line."""
    return f"<span class='labkit-busy'><i class='fa fa-spinner fa-spin'></i> {html.escape(text)}…</span>"


def explain(exc: BaseException, endpoint: str | None, button: str) -> str:
    """One line for an error a button's action raised, saying what to do when labkit cannot be reached."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError
    again = f"then press {button} again"
    if isinstance(exc, EndpointConnectionError):
        where = endpoint or exc.kwargs.get("endpoint_url") or "its endpoint"
        return (f"labkit does not answer at {where}: run 00_setup.ipynb (or `labkit up` in a terminal), "
                f"{again}")
    if isinstance(exc, NoCredentialsError):
        return f"no AWS credentials found: configure them (aws configure, AWS_PROFILE) or use the emulator, {again}"
    if isinstance(exc, AwsError) and exc.code and "NonExistentQueue" in exc.code:
        return f"{exc}; in JupyterLab, run 00_setup.ipynb, {again}"
    if isinstance(exc, JobTimeout):
        return f"{exc}; 00_setup.ipynb starts a local worker, {again}"
    if isinstance(exc, LabkitError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # a bug: still one line, never a silent failure


class Panel:
    """Base of the panels: an ``out`` area, a ``busy`` line (a spinner and what runs while a button's
    action runs), and actions that show their output in ``out`` when a button runs them."""

    def __init__(self) -> None:
        self.out = W.Output()
        self.busy = W.HTML(value="")
        self._to_widget = False
        self._buttons: list[W.Button] = []
        self.box: W.Widget = W.VBox([self.busy, self.out])

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

    def step(self, text: str) -> None:
        """Say in the busy line what the running action does now (only while a button runs it)."""
        if self._to_widget:
            self.busy.value = busy_html(text)

    def _endpoint(self) -> str | None:
        return None

    def _refresh(self) -> None:
        """Enable the inputs and buttons that apply now; panels override it (called after every action)."""
        for button in self._buttons:
            button.disabled = False

    def _button(self, button: W.Button, action: Callable[[], Any], doing: str | Callable[[], str] = "working") -> None:
        """Run ``action`` when ``button`` is clicked: a spinner says ``doing`` (a text, or a function that
        says it) meanwhile, every button of the panel waits, and an error becomes one red line in ``out``."""
        self._buttons.append(button)
        button.layout.width = "max-content"  # as wide as its text, in a row or alone

        def on_click(_: W.Button) -> None:
            self.clear()
            self._to_widget = True
            for b in self._buttons:
                b.disabled = True
            try:
                self.busy.value = busy_html(doing if isinstance(doing, str) else doing())
                action()
            except Exception as exc:  # a button must never fail silently: say what went wrong, and what to do
                self.show(Note(explain(exc, self._endpoint(), button.description), "error"))
            finally:
                self.busy.value = ""
                self._to_widget = False
                self._refresh()
        button.on_click(on_click)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        # Class names that say which panel this is (for styles, and for tests that find it in the page).
        self.box.add_class("labkit-panel")
        self.box.add_class(f"labkit-{type(self).__name__.lower()}")
        display(self.box)


class LabPanel(Panel):
    """A panel that sends jobs through a :class:`Lab`. When that Lab is closed (an unattended run's last
    cell closes it, or a cell called ``lab.close()``), the panel opens a new one on the same settings
    instead of failing, so its buttons keep working after Run All and after any cell runs again."""

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self._lab = lab

    @property
    def lab(self) -> Lab:
        if self._lab.replies.closed:
            self._lab = Lab(self._lab.settings)
        return self._lab

    def _endpoint(self) -> str | None:
        return self._lab.settings.endpoint_url
