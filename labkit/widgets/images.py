"""The panel for image jobs: :class:`ImagePanel`."""

from __future__ import annotations

import html
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W

from labkit import plots
from labkit.client import ImageResult, Lab
from labkit.errors import InvalidInput
from labkit.notebooks import number_or_text
from labkit.presenters import Note, Table
from labkit.samples import SAMPLES, sample_image
from labkit.widgets.base import Panel


def _param_widget(param: dict[str, Any]) -> W.Widget:
    """An input widget for one op parameter (from ``describe_ops()``)."""
    desc, kind = param["name"], param["type"]
    tip = param["doc"]
    if kind == "bool":
        return W.Checkbox(value=bool(param["default"]), description=desc, tooltip=tip, indent=False)
    if param["default"] is None and not param["required"]:
        return W.Text(value="", placeholder="optional", description=desc, tooltip=tip)
    lo = param["min"] if param["min"] is not None else -1e9
    hi = param["max"] if param["max"] is not None else 1e9
    value = param["default"] if param["default"] is not None else max(lo, 0)
    if kind == "int":
        return W.BoundedIntText(value=int(value), min=int(lo), max=int(hi), description=desc, tooltip=tip)
    return W.BoundedFloatText(value=float(value), min=float(lo), max=float(hi), description=desc, tooltip=tip)


def _read_param(widget: W.Widget) -> Any:
    value = widget.value
    if isinstance(widget, W.Text):
        text = value.strip()
        # A blank optional parameter is not sent; anything that is not a number is sent as typed and the
        # op's validation names it as wrong.
        return number_or_text(text) if text else None
    return value


def format_ops(ops: Sequence[dict[str, Any]]) -> str:
    """``grayscale → thumbnail size=128`` (for titles and lists)."""
    parts = []
    for op in ops:
        params = " ".join(f"{k}={v}" for k, v in op.items() if k != "op")
        parts.append(f"{op['op']} {params}".strip())
    return " → ".join(parts) or "(no ops: re-encode)"


class ImagePanel(Panel):
    """Upload an image (or pick a sample), build a list of operations with their parameters, process it
    on a worker, and show original and result side by side; list and download the bucket's images."""

    def __init__(self, lab: Lab, sample: str = "gradient", timeout: float = 120.0) -> None:
        from labkit.jobs.images import describe_ops
        super().__init__()
        self.lab = lab
        self.timeout = timeout
        self.op_specs = {op["name"]: op for op in describe_ops()}
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload image")
        self.sample = W.Dropdown(options=SAMPLES, value=sample, description="or sample")
        self.op = W.Dropdown(options=list(self.op_specs), value="grayscale", description="operation")
        self.op_doc = W.HTML()
        self.params = W.VBox()
        self.param_widgets: dict[str, W.Widget] = {}
        self.add_button = W.Button(description="Add operation", icon="plus")
        self.clear_button = W.Button(description="Clear operations", icon="times")
        self.pipeline_view = W.HTML()
        self.format = W.Dropdown(options=["png", "jpeg", "webp"], value="png", description="format")
        self.process_button = W.Button(description="Process", button_style="primary", icon="cogs")
        self.list_button = W.Button(description="List images", icon="list")
        self.dest = W.Text(value="downloads", description="save to")
        self.download_button = W.Button(description="Download result", icon="download")
        self.pipeline: list[dict[str, Any]] = []
        self.result: ImageResult | None = None
        self.original: Any = None
        self.processed: Any = None
        self.figure: Any = None
        self.op.observe(lambda _: self._build_params(), "value")
        self._button(self.add_button, self.add_op)
        self._button(self.clear_button, self.clear_ops)
        self._button(self.process_button, self.process)
        self._button(self.list_button, self.list_images)
        self._button(self.download_button, self.download)
        self._build_params()
        self._render_pipeline()
        self.box = W.VBox([
            W.HBox([self.upload, self.sample]),
            W.HBox([self.op, self.add_button, self.clear_button]), self.op_doc, self.params, self.pipeline_view,
            W.HBox([self.format, self.process_button]),
            W.HBox([self.list_button, self.dest, self.download_button]), self.out])

    def _build_params(self) -> None:
        spec = self.op_specs[self.op.value]
        self.param_widgets = {p["name"]: _param_widget(p) for p in spec["params"]}
        self.params.children = tuple(self.param_widgets.values())
        self.op_doc.value = f"<i>{html.escape(spec['doc'])}</i>"

    def _render_pipeline(self) -> None:
        self.pipeline_view.value = f"<b>operations:</b> {html.escape(format_ops(self.pipeline))}"

    def add_op(self, op: str | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Append an operation: a spec like ``"thumbnail:128"`` or ``{"op": "blur", "radius": 3}``, or
        (no argument) the one chosen in the widgets. Validated now, so mistakes show at once."""
        from labkit.jobs.images import parse_ops
        if op is None:
            params = {k: _read_param(w) for k, w in self.param_widgets.items()}
            op = {"op": self.op.value, **{k: v for k, v in params.items() if v is not None}}
        self.pipeline += parse_ops([op]).to_list()
        self._render_pipeline()
        if self._to_widget:
            self.show(Note(f"operations: {format_ops(self.pipeline)}"))
        return list(self.pipeline)

    def clear_ops(self) -> None:
        """Forget the operations chosen so far."""
        self.pipeline.clear()
        self._render_pipeline()

    def use_file(self, path: str | Path) -> None:
        """Take a picture file as if it had been uploaded with the upload button."""
        import datetime
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"no image file at {path}")
        data = path.read_bytes()
        self.upload.value = ({"name": path.name, "type": "", "size": len(data), "content": memoryview(data),
                              "last_modified": datetime.datetime.now(datetime.timezone.utc)},)

    def source(self) -> tuple[bytes, str]:
        """(bytes, name) of the uploaded image, else of the chosen sample."""
        if self.upload.value:
            item = self.upload.value[0]
            return bytes(item["content"]), item["name"]
        return sample_image(self.sample.value), f"sample-{self.sample.value}.png"

    def process(self) -> ImageResult:
        """Upload the image to ``images/unprocessed/``, run the operations on a worker, show both images."""
        from PIL import Image
        data, name = self.source()
        t0 = time.perf_counter()
        job = self.lab.image(data, self.pipeline, format=self.format.value, name=name)
        result = job.result(timeout=self.timeout)
        elapsed = time.perf_counter() - t0
        self.result = result
        self.original = Image.open(io.BytesIO(data))
        self.original.load()
        self.processed = result.open()
        rows = [["operations", format_ops(self.pipeline)],
                ["original", f"s3://{self.lab.bucket.name}/{result['source']} "
                             f"({self.original.width} x {self.original.height}, {len(data):,} bytes)"],
                ["result", f"s3://{result['bucket']}/{result.key} ({result['width']} x {result['height']}, "
                           f"{result['format']})"],
                ["round trip", f"{elapsed * 1000:,.0f} ms"]]
        self.show(Table(rows, None, f"Image job {job.id[:8]}"))
        self.figure = plots.images_side_by_side(self.original, self.processed, format_ops(self.pipeline),
                                                title=f"{name}: {format_ops(self.pipeline)}")
        self.show(self.figure)
        return result

    def list_images(self) -> dict[str, list[Any]]:
        """Show and return the objects in ``images/unprocessed/`` and ``images/processed/``."""
        out = {}
        for folder in ("unprocessed", "processed"):
            items = self.lab.list_images(folder)
            out[folder] = items
            rows = [[o.name, f"{o.size / 1024:,.1f}", o.modified.strftime("%Y-%m-%d %H:%M:%S")] for o in items]
            self.show(Table(rows or [["(empty)", "", ""]], ["name", "KiB", "modified"], f"images/{folder}/"))
        return out

    def download(self, dest: str | Path | None = None) -> Path:
        """Save the last result into ``dest`` (default: the ``save to`` field's folder); returns the path."""
        if self.result is None:
            raise InvalidInput("nothing to download yet: process an image first")
        folder = Path(dest if dest is not None else self.dest.value or ".")
        folder.mkdir(parents=True, exist_ok=True)
        path = self.result.download(folder)
        self.show(Note(f"saved {path} ({path.stat().st_size:,} bytes)", "ok"))
        return path
