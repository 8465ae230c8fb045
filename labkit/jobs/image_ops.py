"""The registry of image operations: :class:`Param` and :class:`Op` describe an operation, ``OPS`` maps
every name and alias to its op, :class:`Step` is one op with checked parameters.

The built-in ops live in :mod:`labkit.jobs.image_filters` and register themselves with :func:`register`
when imported; pipelines of steps are :mod:`labkit.jobs.image_pipeline`. Pure module: no Pillow calls
here, no files, no network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from labkit.errors import InvalidInput

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MAX_OPS", "MAX_SIDE", "OPS", "Op", "Param", "Step", "register"]

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
