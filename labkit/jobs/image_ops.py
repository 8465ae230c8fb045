"""The registry of image operations, and pipelines of them checked once.

* :class:`Param` and :class:`Op` describe an operation; ``OPS`` maps every name and alias to its op
  (the built-in ops live in :mod:`labkit.jobs.image_filters` and register themselves on import).
* :func:`validate_ops` turns the message protocol's ``[{"op": name, **params}, ...]`` into a
  :class:`Pipeline`: validated steps that :func:`labkit.jobs.images.process` runs without checking again.
  ``Pipeline.to_list()`` gives the protocol's list back (canonical names, defaults filled in).
* :func:`parse_op_spec` reads one command-line spec (``"resize:256x256"``); :func:`parse_ops` builds a
  pipeline from specs and dicts alike, checking each op once.
* :func:`describe_ops` lists ops and parameters for user interfaces.

Pure module: no Pillow calls here, no files, no network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from labkit.errors import InvalidInput

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MAX_OPS", "MAX_SIDE", "OPS", "Op", "Param", "Pipeline", "Shrink", "Step", "describe_ops",
           "parse_op_spec", "parse_ops", "register", "validate_ops"]

MAX_OPS = 20
"""At most this many operations in one job."""

MAX_SIDE = 10_000
"""Largest width or height a resize/thumbnail parameter may ask for."""

Size = tuple[int, int]
Finish = Callable[[dict[str, Any], set[str]], dict[str, Any]]
SizeRule = Callable[[Size, dict[str, Any]], Size]


def show(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def megapixels(pixels: int) -> str:
    """``12_300_000`` -> ``"12.3"``, for error messages."""
    value = pixels / 1_000_000
    return str(round(value)) if value >= 100 else f"{value:.3g}"


def scalar(text: str) -> Any:
    """``"12"`` -> 12, ``"2.5"`` -> 2.5, ``"true"``/``"false"`` -> bool, anything else stays a string."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# ----------------------------------------------------------------------------------------------------
# Parameters and ops


@dataclass(frozen=True)
class Param:
    """One parameter of an op: ``type`` is "int", "number" or "bool"; ``min``/``max`` are inclusive
    (``exclusive_min`` makes ``min`` exclusive)."""

    name: str
    type: str
    doc: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    required: bool = False

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.type == "bool":
            return "true or false"
        noun = "integer" if self.type == "int" else "number"
        article = "an" if noun == "integer" else "a"
        lo, hi = self.min, self.max
        if self.type == "int" and lo == 1 and not self.exclusive_min:
            return f"a positive integer ≤ {_num(hi)}" if hi is not None else "a positive integer"
        if lo is not None and hi is not None:
            if self.exclusive_min:
                return f"{article} {noun} > {_num(lo)} and ≤ {_num(hi)}"
            return f"{article} {noun} from {_num(lo)} to {_num(hi)}"
        if lo is not None:
            if self.type == "int" and lo == 0 and not self.exclusive_min:
                return "a non-negative integer"
            return f"{article} {noun} {'>' if self.exclusive_min else '≥'} {_num(lo)}"
        if hi is not None:
            return f"{article} {noun} ≤ {_num(hi)}"
        return f"{article} {noun}"

    def check(self, op: str, value: Any) -> Any:
        """Return the normalized value or raise ``InvalidInput`` naming ``op`` and the parameter."""
        bad = InvalidInput(f"{op}: {self.name} must be {self.expected()}, got {show(value)}")
        if self.type == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if isinstance(value, float):
            if not math.isfinite(value):
                raise bad
            if self.type == "int":
                if not value.is_integer():
                    raise bad
                value = int(value)
        if self.min is not None and (value <= self.min if self.exclusive_min else value < self.min):
            raise bad
        if self.max is not None and value > self.max:
            raise bad
        return value

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the parameter."""
        return {"name": self.name, "type": self.type, "doc": self.doc, "default": self.default,
                "required": self.required, "min": self.min, "max": self.max,
                "exclusive_min": self.exclusive_min}


@dataclass(frozen=True)
class Op:
    """A registered image operation.

    What a decoder may skip for it (see :meth:`Pipeline.shrink`): ``commutes`` ops give the same result
    on a smaller copy as a smaller copy of their result (colour maps, mirror images); ``resamples`` ops
    resample the whole image to ``size(...)``, so they may start from a smaller decode; ``gray_mode`` is
    the mode (``"L"``) a decoder may produce directly when the op comes before anything else that needs
    the colours.
    """

    name: str
    doc: str
    params: tuple[Param, ...]
    func: Callable[..., Image.Image] = field(repr=False)
    aliases: tuple[str, ...] = ()
    example: str = ""
    # finish(values, given) -> values: cross-parameter checks after each parameter was checked.
    finish: Finish | None = field(default=None, repr=False)
    # size(current_size, values) -> the output size (an upper bound for rotate); None: size unchanged.
    size: SizeRule | None = field(default=None, repr=False)
    # shorthand(text) -> raw params, for "name:text" specs without "key=value".
    shorthand: Callable[[str], dict[str, Any]] | None = field(default=None, repr=False)
    commutes: bool = False
    resamples: bool = False
    gray_mode: str | None = None

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Check and normalize ``params`` (without the "op" key); a value of None counts as absent.

        Returns a new dict with defaults filled in; raises ``InvalidInput`` naming the op and the parameter.
        """
        if not isinstance(params, dict):
            raise InvalidInput(f"{self.name}: parameters must be an object, got {type(params).__name__}")
        known = {p.name: p for p in self.params}
        for key in params:
            if key not in known:
                hint = f"known: {', '.join(known)}" if known else f"{self.name} takes no parameters"
                raise InvalidInput(f"{self.name}: unknown parameter {show(key)} ({hint})")
        given = {k for k, v in params.items() if v is not None}
        values: dict[str, Any] = {}
        for p in self.params:
            if p.name in given:
                values[p.name] = p.check(self.name, params[p.name])
            elif p.required:
                raise InvalidInput(f"{self.name}: {p.name} is required ({p.expected()})")
            elif p.default is not None:
                values[p.name] = p.default
        if self.finish is not None:
            values = self.finish(values, given)
        return values

    def step(self, params: dict[str, Any]) -> Step:
        """``params`` validated, as a :class:`Step` of a pipeline."""
        return Step(self, MappingProxyType(self.validate(params)))

    def apply(self, img: Image.Image, **params: Any) -> Image.Image:
        """Validate ``params`` and return a new image with the op applied."""
        return self.step(params).apply(img)

    def output_size(self, size: Size, params: dict[str, Any]) -> Size:
        """Predicted size of the result (an upper bound for ops that may enlarge; ``size`` otherwise)."""
        return self.step(params).output_size(size)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the op, for building user interfaces."""
        return {"name": self.name, "doc": self.doc, "aliases": list(self.aliases), "example": self.example,
                "params": [p.describe() for p in self.params]}


OPS: dict[str, Op] = {}
"""Every op by name and by alias (``OPS["threshold"] is OPS["bw"]``)."""


def register(name: str, doc: str, *params: Param, aliases: tuple[str, ...] = (), example: str = "",
             **traits: Any) -> Callable[[Callable[..., Image.Image]], Callable[..., Image.Image]]:
    """Decorator: register ``func(img, **params) -> image`` as the op ``name`` (and its aliases).

    ``traits`` are the other :class:`Op` fields: finish, size, shorthand, commutes, resamples, gray_mode.
    """
    def decorator(func: Callable[..., Image.Image]) -> Callable[..., Image.Image]:
        op = Op(name, doc, tuple(params), func, aliases, example or name, **traits)
        for key in (name, *aliases):
            OPS[key] = op
        return func

    return decorator


def _known_ops() -> str:
    return ", ".join(sorted(OPS))


def _lookup(name: Any, where: str = "") -> Op:
    op = OPS.get(name.strip().lower()) if isinstance(name, str) else None
    if op is None:
        raise InvalidInput(f"{where}unknown op {show(name)} (known ops: {_known_ops()})")
    return op


# ----------------------------------------------------------------------------------------------------
# Pipelines


@dataclass(frozen=True)
class Step:
    """One validated op of a pipeline: ``params`` are normalized and read-only."""

    op: Op
    params: Mapping[str, Any]

    def apply(self, img: Image.Image) -> Image.Image:
        """A new image with the op applied (the parameters are not checked again)."""
        return self.op.func(img, **self.params)

    def output_size(self, size: Size) -> Size:
        """The size of the result for an input of ``size`` (an upper bound for rotate)."""
        return self.op.size(size, dict(self.params)) if self.op.size is not None else size

    def to_dict(self) -> dict[str, Any]:
        """The protocol's ``{"op": name, **params}``."""
        return {"op": self.op.name, **self.params}


@dataclass(frozen=True)
class Shrink:
    """What a decoder may leave out for a pipeline (see :meth:`Pipeline.shrink`)."""

    gray: bool
    """The image becomes grayscale before anything needs its colours: decoding to "L" is enough."""
    index: int | None = None
    """The step that resamples the whole image to ``size`` before anything needs full resolution."""
    size: Size | None = None


@dataclass(frozen=True, eq=False)
class Pipeline:
    """Validated ops, as :func:`validate_ops` returns them; ``process`` runs them without checking again.

    Equal to another pipeline or to a protocol list with the same steps (``to_list()``).
    """

    steps: tuple[Step, ...] = ()

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pipeline):
            return self.to_list() == other.to_list()
        if isinstance(other, list):
            return self.to_list() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are not hashable

    def to_list(self) -> list[dict[str, Any]]:
        """The message protocol's ``[{"op": name, **params}, ...]``, ready for JSON."""
        return [step.to_dict() for step in self.steps]

    def shrink(self, size: Size) -> Shrink:
        """What an image of ``size`` may lose while decoding without changing the result.

        Walks the steps that commute with shrinking (grayscale, invert, flip, mirror); ``gray`` says one
        of them goes to grayscale. If the first other step resamples the whole image, ``index`` and
        ``size`` name it and the size it produces from ``size`` (so a decoder may start smaller than
        ``size`` but not smaller than that).
        """
        gray = False
        for i, step in enumerate(self.steps):
            if step.op.resamples:
                return Shrink(gray, i, step.output_size(size))
            if not step.op.commutes:
                break
            gray = gray or step.op.gray_mode == "L"
        return Shrink(gray)


def validate_ops(ops: list[dict[str, Any]] | Pipeline) -> Pipeline:
    """Check a list of ``{"op": name, **params}`` dicts once, into a :class:`Pipeline` (canonical op
    names, defaults filled in; the input is not modified). A pipeline is returned as it is. An empty list
    is allowed: it means "just re-encode"."""
    if isinstance(ops, Pipeline):
        return ops
    if not isinstance(ops, list):
        raise InvalidInput(f"ops must be a list of operations, got {type(ops).__name__}")
    _check_count(len(ops))
    return Pipeline(tuple(_step_of(item, i) for i, item in enumerate(ops)))


def parse_ops(items: Iterable[str | dict[str, Any]] | Pipeline) -> Pipeline:
    """A pipeline from command-line specs (``"resize:256x"``) and protocol dicts alike, each op checked
    once (what a client does before it uploads anything)."""
    if isinstance(items, Pipeline):
        return items
    if isinstance(items, (str, dict)):
        raise InvalidInput(f"ops must be a list of operations, got {type(items).__name__}")
    items = list(items)
    _check_count(len(items))
    return Pipeline(tuple(_spec_step(item) if isinstance(item, str) else _step_of(item, i)
                          for i, item in enumerate(items)))


def _check_count(count: int) -> None:
    if count > MAX_OPS:
        raise InvalidInput(f"too many ops: {count} (at most {MAX_OPS})")


def _step_of(item: Any, i: int) -> Step:
    if not isinstance(item, dict):
        raise InvalidInput(f"ops[{i}] must be an object with an 'op' key, got {type(item).__name__}")
    if "op" not in item:
        raise InvalidInput(f"ops[{i}] has no 'op' (known ops: {_known_ops()})")
    op = _lookup(item["op"], f"ops[{i}]: ")
    return op.step({k: v for k, v in item.items() if k != "op"})


def _parse_spec(spec: Any) -> tuple[Op, dict[str, Any]]:
    """(op, raw parameters) of a command-line spec, before the parameters are checked."""
    if not isinstance(spec, str):
        raise InvalidInput(f"an op spec must be a string, got {type(spec).__name__}")
    name, _, text = spec.strip().partition(":")
    if not name.strip():
        raise InvalidInput(f"empty op spec {spec!r} (known ops: {_known_ops()})")
    op = _lookup(name)
    text = text.strip()
    if "=" in text:
        return op, _key_values(op, text)
    if not text:
        return op, {}
    if op.shorthand is None:
        if not op.params:
            raise InvalidInput(f"{op.name}: takes no parameters, got {text!r}")
        names = ",".join(f"{p.name}=..." for p in op.params)
        raise InvalidInput(f"{op.name}: expected {op.name}:{names}, got {text!r}")
    return op, op.shorthand(text)


def _key_values(op: Op, text: str) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise InvalidInput(f"{op.name}: expected key=value, got {item.strip()!r}")
        if key in raw:
            raise InvalidInput(f"{op.name}: parameter {key!r} given twice")
        raw[key] = scalar(value)
    return raw


def _spec_step(spec: str) -> Step:
    op, raw = _parse_spec(spec)
    return op.step(raw)


def parse_op_spec(spec: str) -> dict[str, Any]:
    """Parse a command-line op spec into ``{"op": name, **params}`` (only the parameters given, validated).

    ``"grayscale"``, ``"resize:256x256"`` / ``"resize:256x"`` / ``"resize:x128"``, ``"thumbnail:128"``,
    ``"rotate:90"``, ``"blur:2.5"``, ``"bw:128"``, ``"crop:10,10,200,200"``, ``"autocontrast:2"``, or generic
    ``"op:key=value,key=value"`` (values parsed as int, float, true/false, else string).
    """
    op, raw = _parse_spec(spec)
    values = op.validate(raw)
    return {"op": op.name, **{k: values[k] for k in raw if k in values}}


def describe_ops() -> list[dict[str, Any]]:
    """Every op (aliases listed with their op, not repeated): name, doc, aliases, example and parameters,
    each with name, type ("int" | "number" | "bool"), doc, default, required, min, max and exclusive_min."""
    seen: dict[str, Op] = {}
    for op in OPS.values():
        seen.setdefault(op.name, op)
    return [op.describe() for op in seen.values()]


# The built-in ops register themselves into OPS (image_filters imports this module first).
from labkit.jobs import image_filters as _builtin_ops  # noqa: E402, F401
