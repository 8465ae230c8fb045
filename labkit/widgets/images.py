"""The panel for image jobs: :class:`ImagePanel`."""

from __future__ import annotations

import base64
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
from labkit.future import writable_folder
from labkit.keys import content_type
from labkit.notebooks import number_or_text
from labkit.presenters import Note, Table
from labkit.samples import SAMPLES, sample_image
from labkit.widgets.base import LABELS, TOGGLES, FloatField, IntField, LabPanel

READABLE = "PNG, JPEG, WebP, GIF, BMP or TIFF"
LINK_LIMIT = 20 * 2**20  # bytes: the link carries the image through the kernel's connection to the page


def _param_widget(param: dict[str, Any]) -> W.Widget:
    """An input widget for one op parameter (from ``describe_ops()``): a number box that keeps the
    parameter's range and says when a value is out of it (never clamps it silently)."""
    desc, kind = param["name"], param["type"]
    tip = param["doc"]
    if kind == "bool":
        return W.Checkbox(value=bool(param["default"]), description=desc, tooltip=tip, indent=False)
    if param["default"] is None and not param["required"]:
        return W.Text(value="", placeholder="optional", description=desc, tooltip=tip, style=LABELS)
    lo, hi = param["min"], param["max"]
    value = param["default"] if param["default"] is not None else max(lo or 0, 0)
    if kind == "int":
        return IntField(int(value), lo, hi, desc, tooltip=tip)
    return FloatField(float(value), lo, hi, desc, tooltip=tip)


def _read_param(widget: W.Widget, name: str) -> Any:
    if isinstance(widget, IntField | FloatField):
        return widget.checked(name)
    value = widget.value
    if isinstance(widget, W.Text):
        text = value.strip()
        # A blank optional parameter is not sent; anything that is not a number is sent as typed and the
        # op's validation names it as wrong.
        return number_or_text(text) if text else None
    return value


def image_info(data: bytes, name: str) -> str:
    """``"JPEG, 120 x 90"``; :class:`InvalidInput` when ``data`` is not an image Pillow can read."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as img:
            return f"{img.format}, {img.width} x {img.height}"
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInput(f"{name} is not an image: choose a {READABLE} file") from exc


def download_link(data: bytes, name: str, fmt: str) -> str:
    """An HTML link the browser downloads ``data`` from (a data URL: it needs no route to this machine's
    files, so it works on a remote JupyterHub too); a note instead when the image is too large to carry."""
    if len(data) > LINK_LIMIT:
        return (f"<i>{html.escape(name)} is {len(data) / 2**20:,.0f} MiB, too large for a browser link (at most "
                f"{LINK_LIMIT // 2**20} MiB): save it on the server, or use <code>labkit submit image --out</code></i>")
    url = f"data:{content_type(fmt)};base64,{base64.b64encode(data).decode()}"
    return (f'<a class="jupyter-button widget-button labkit-download" download="{html.escape(name)}" '
            f'href="{url}" style="text-decoration:none;padding:0 12px;width:auto">'
            f'<i class="fa fa-download"></i> Download {html.escape(name)} ({len(data) / 1024:,.1f} KiB)</a>')


def format_ops(ops: Sequence[dict[str, Any]]) -> str:
    """``grayscale → thumbnail size=128`` (for titles and lists)."""
    parts = []
    for op in ops:
        params = " ".join(f"{k}={v}" for k, v in op.items() if k != "op")
        parts.append(f"{op['op']} {params}".strip())
    return " → ".join(parts) or "(no ops: re-encode)"


class ImagePanel(LabPanel):
    """Choose an image (a sample, or a file of yours), build a list of operations with their parameters,
    process it on a worker, and show original and result side by side; download the result in the
    browser or save it on the server; list the bucket's images."""

    SOURCES = (("sample", "sample"), ("my file", "upload"))

    def __init__(self, lab: Lab, sample: str = "gradient", timeout: float = 120.0,
                 download_dir: str | Path = "downloads") -> None:
        from labkit.jobs.images import describe_ops
        super().__init__(lab)
        self.timeout = timeout
        self.op_specs = {op["name"]: op for op in describe_ops()}
        self.source = W.ToggleButtons(options=self.SOURCES, value="sample", description="image", style=TOGGLES)
        self.sample = W.Dropdown(options=SAMPLES, value=sample, description="sample", style=LABELS)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Choose file",
                                   layout=W.Layout(width="auto"))
        self.file_label = W.HTML()
        self.clear_file_button = W.Button(description="Clear file", icon="times", tooltip="forget the chosen file")
        self.op = W.Dropdown(options=list(self.op_specs), value="grayscale", description="operation", style=LABELS)
        self.op_doc = W.HTML()
        self.params = W.VBox()
        self.param_widgets: dict[str, W.Widget] = {}
        self.add_button = W.Button(description="Add operation", icon="plus")
        self.clear_button = W.Button(description="Clear operations", icon="times")
        self.pipeline_view = W.HTML()
        self.format = W.Dropdown(options=["png", "jpeg", "webp"], value="png", description="format", style=LABELS)
        self.process_button = W.Button(description="Process", button_style="primary", icon="cogs")
        self.download_link = W.HTML(value="")
        self.list_button = W.Button(description="List images", icon="list")
        self.dest = W.Text(value=str(download_dir), description="server folder", style=LABELS,
                           tooltip="the folder on the server (relative to this notebook) that Save writes into")
        self.save_button = W.Button(description="Save on server", icon="save",
                                    tooltip="save the last result into the server folder")
        self.pipeline: list[dict[str, Any]] = []
        self.result: ImageResult | None = None
        self.result_bytes: bytes | None = None
        self.original: Any = None
        self.processed: Any = None
        self.figure: Any = None
        self.op.observe(lambda _: self._build_params(), "value")
        self.upload.observe(lambda _: self._file_changed(), "value")
        self.sample.observe(lambda _: setattr(self.source, "value", "sample"), "value")
        self.source.observe(lambda _: self._refresh(), "value")
        self._button(self.clear_file_button, self.clear_file, "clearing the file")
        self._button(self.add_button, self.add_op, "checking the operation")
        self._button(self.clear_button, self.clear_ops, "clearing")
        self._button(self.process_button, self.process, "uploading the image")
        self._button(self.list_button, self.list_images, "listing the bucket")
        self._button(self.save_button, self.download, "saving on the server")
        self._build_params()
        self._render_pipeline()
        self._file_changed()
        self.box = W.VBox([
            W.HBox([self.source, self.sample]), W.HBox([self.upload, self.clear_file_button, self.file_label]),
            W.HBox([self.op, self.add_button, self.clear_button]), self.op_doc, self.params, self.pipeline_view,
            W.HBox([self.format, self.process_button]), self.download_link,
            W.HBox([self.list_button, self.dest, self.save_button]), self.busy, self.out])

    def _refresh(self) -> None:
        super()._refresh()
        self.sample.disabled = self.source.value != "sample"
        self.clear_file_button.disabled = not self.upload.value
        self.save_button.disabled = self.result is None

    def _file_changed(self) -> None:
        """A file was chosen (or cleared): it becomes the source, and its name shows."""
        if not self.upload.value:
            self.file_label.value = "<i>no file chosen</i>"
            self.source.value = "sample"
        else:
            item = self.upload.value[0]
            data, name = bytes(item["content"]), item["name"]
            try:
                what = f"{html.escape(name)} ({image_info(data, name)}, {len(data) / 1024:,.1f} KiB)"
            except InvalidInput as exc:
                what = f"<span style='color:{Note.COLORS['error']}'>{html.escape(str(exc))}</span>"
            self.file_label.value = f"file: {what}"
            self.source.value = "upload"
        self._refresh()

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
            name = self.op.value
            params = {k: _read_param(w, f"{name}: {k}") for k, w in self.param_widgets.items()}
            op = {"op": name, **{k: v for k, v in params.items() if v is not None}}
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
        """Take a picture file as if it had been chosen with **Choose file** (it becomes the source)."""
        import datetime
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"no image file at {path}")
        data = path.read_bytes()
        self.upload.value = ({"name": path.name, "type": "", "size": len(data), "content": memoryview(data),
                              "last_modified": datetime.datetime.now(datetime.timezone.utc)},)

    def clear_file(self) -> None:
        """Forget the chosen file; the sample is the source again."""
        self.upload.value = ()

    def source_image(self) -> tuple[bytes, str]:
        """(bytes, name) of the chosen source: the file (checked to be an image), or the sample."""
        if self.source.value == "upload":
            if not self.upload.value:
                raise InvalidInput("no file chosen: press Choose file, or choose 'sample'")
            item = self.upload.value[0]
            data, name = bytes(item["content"]), item["name"]
            image_info(data, name)
            return data, name
        return sample_image(self.sample.value), f"sample-{self.sample.value}.png"

    def process(self) -> ImageResult:
        """Upload the image to ``images/unprocessed/``, run the operations on a worker, show both images
        and a link that downloads the result in the browser."""
        from PIL import Image
        data, name = self.source_image()
        t0 = time.perf_counter()
        self.step(f"uploading {name} and sending the job")
        job = self.lab.image(data, self.pipeline, format=self.format.value, name=name)
        self.step(f"waiting for a worker to process {name}")
        result = job.result(timeout=self.timeout)
        self.step("fetching the result")
        self.result_bytes = self.lab.bucket.get(result.key)
        elapsed = time.perf_counter() - t0
        self.result = result
        self.original = Image.open(io.BytesIO(data))
        self.original.load()
        self.processed = Image.open(io.BytesIO(self.result_bytes))
        self.processed.load()
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
        self.download_link.value = download_link(self.result_bytes, Path(result.key).name, result["format"])
        return result

    def list_images(self) -> dict[str, list[Any]]:
        """Show and return the objects in ``images/unprocessed/`` and ``images/processed/``."""
        out = {}
        for folder in ("unprocessed", "processed"):
            items = self.lab.list_images(folder)
            out[folder] = items
            # Keys are <content hash>/<name> (uploads) and <job id>/<name> (results): the name first.
            rows = [[o.name.rsplit("/", 1)[-1], o.name.rpartition("/")[0] or "-", f"{o.size / 1024:,.1f}",
                     o.modified.strftime("%Y-%m-%d %H:%M:%S")] for o in items]
            self.show(Table(rows or [["(empty)", "", "", ""]], ["name", "under", "KiB", "modified"],
                            f"images/{folder}/"))
        return out

    def download(self, dest: str | Path | None = None) -> Path:
        """Save the last result on the server, into ``dest`` (default: the **server folder** field, which
        starts as the notebook's ``download_dir``); returns the path."""
        if self.result is None:
            raise InvalidInput("nothing to save yet: process an image first")
        folder = writable_folder(Path(dest if dest is not None else self.dest.value or "."))
        path = self.result.download(folder)
        self.show(Note(f"saved {path.resolve()} ({path.stat().st_size:,} bytes)", "ok"))
        return path
