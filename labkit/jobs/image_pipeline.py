"""Pipelines of image operations, checked once.

* :func:`validate_ops` turns the message protocol's ``[{"op": name, **params}, ...]`` into a
  :class:`Pipeline`: validated steps that :func:`labkit.jobs.images.process` runs without checking again.
  ``Pipeline.to_list()`` gives the protocol's list back (canonical names, defaults filled in).
* :func:`parse_op_spec` reads one command-line spec (``"resize:256x256"``); :func:`parse_ops` builds a
  pipeline from specs and dicts alike, checking each op once.
* :func:`describe_ops` lists ops and parameters for user interfaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from labkit.errors import InvalidInput
from labkit.jobs import image_filters  # noqa: F401  (the built-in ops register themselves on import)
from labkit.jobs.image_ops import MAX_OPS, OPS, Op, Size, Step, _known_ops, _lookup, scalar

__all__ = ["Pipeline", "Shrink", "describe_ops", "parse_op_spec", "parse_ops", "validate_ops"]


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
