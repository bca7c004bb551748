"""JSON request parameters -> option dataclasses: the type checks of `gdyn serve` requests.

An options dataclass (`AnimateOptions`, `SimulateOptions`, and the items of
its lists, `PokeSpec`, `DragSpec`) is the schema: its field names are the
allowed keys, fields without a default are required, and each field's type
says how a JSON value is read:

    int, float       a finite JSON number (an int must be whole; true/false are refused)
    str              a JSON string
    bool             true or false (a string such as "no" is refused, not read by truth)
    Path             a path string (~ expanded)
    Any              any JSON value, as it is (a `cancel` request's target id)
    X | None         null (or "" for a path) means None, else as X
    Spec             an object read as the dataclass Spec (a live step's "hold")
    tuple[Spec, ...] a list of objects, each read as the dataclass Spec, named
                     to the user by Spec.LABEL and its position from 1 ("poke 2")

Every mistake is one `UserError` line naming the request and the key.
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path

from gdyn_backend.errors import UserError


MAX_SEED = 2**32 - 1  # seeds are 0..MAX_SEED everywhere (CLI and requests)


def required_path(params: dict, key: str, request: str) -> Path:
    """params[key] as a Path; UserError if it is missing, empty or not a string."""
    value = params.get(key)
    if value in (None, ""):
        raise UserError(f"{request}: missing parameter {key!r}")
    return _value(value, Path, f"{request}: parameter {key!r}", request)


def check_seed(seed, option: str = "--seed") -> int:
    """`seed` as an int in 0..MAX_SEED; UserError naming `option` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{option} must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return seed


def option_values(schema: type, params: dict, request: str, extra: tuple[str, ...] = ()) -> dict:
    """Keyword arguments of dataclass `schema` from the JSON object `params`.

    request: what the user sent ("animate"), the start of every message.
    extra:   further allowed keys the caller reads itself ("image", "output").
    """
    return _values(schema, params, request, "parameter", extra)


def _values(schema: type, obj, where: str, noun: str, extra: tuple[str, ...] = ()) -> dict:
    names = [f.name for f in fields(schema)]
    allowed = ", ".join([*extra, *names])
    if not isinstance(obj, dict):
        raise UserError(f"{where} must be an object with {noun}s {allowed}")
    for key in obj:
        if key not in names and key not in extra:
            raise UserError(f"{where}: unknown {noun} {key!r}; allowed: {allowed}")
    for f in fields(schema):
        if f.name not in obj and f.default is MISSING and f.default_factory is MISSING:
            raise UserError(f"{where}: missing {noun} {f.name!r}; {noun}s: {allowed}")
    hints = typing.get_type_hints(schema)
    return {key: _value(value, hints[key], f"{where}: {noun} {key!r}", where)
            for key, value in obj.items() if key in names}


def _value(value, kind, what: str, where: str):
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None or (value == "" and Path in args):
            return None
        (kind,) = [a for a in args if a is not type(None)]
        args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        spec = args[0]
        if not isinstance(value, list):
            raise UserError(f"{what} must be a list of objects")
        return tuple(spec(**_values(spec, item, f"{where}: {spec.LABEL} {n + 1}", "key"))
                     for n, item in enumerate(value))
    if is_dataclass(kind):
        return kind(**_values(kind, value, what, "key"))
    if kind is typing.Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{what} must be true or false, got {value!r}")
        return value
    if kind is Path:
        if not isinstance(value, str):
            raise UserError(f"{what} must be a file path, got {value!r}")
        return Path(value).expanduser()
    if kind is str:
        if not isinstance(value, str):
            raise UserError(f"{what} must be a string, got {value!r}")
        return value
    if kind in (int, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or (kind is int and value != int(value)):
            raise UserError(f"{what} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        return kind(value)
    raise TypeError(f"no JSON reading for a field of type {kind}")
