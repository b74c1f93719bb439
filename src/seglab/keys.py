"""One definition per config key: `option(...)` makes a dataclass field whose metadata (`KeyRule`) holds the key's
help text, accepted values (choices, bounds, list length, a check of its own) and whether it may change on resume.

Every reader derives from that definition: `option_keys` lists a class's flat keys (those of nested options classes
where they stand), `check_value` validates one value by its key's type and rule, `check_fields` an options object's
values, `from_checked` and `flat_values` build and take apart nested options. The data options
(`seglab.data.options`) and the training config (`seglab.training.config`) both define their keys here, so their
validation, `--help-config`, the written config.yaml, resume and the docs' reference read one place.

Torch-free and free of seglab's other layers: the data layer's options, which the command line reads without torch,
are defined with it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, TypeVar, Union

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

from seglab.errors import ConfigError

# Whether `seglab train --resume RUN --set key=value` may change a key: only keys that extend the run or say where
# and how fast it runs; any other change would make the continuation a different experiment.
Resume = Literal["fixed", "may change"]

Options = TypeVar("Options")


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """What one config key means and accepts: the field metadata `option` stores, which every reader uses.

    `choices` and the bounds (`low`/`high`, excluded with `low_open`/`high_open`) apply to the value, or to each
    item of a list value; `length` fixes a list's length; `check(value)` returns a problem in words (or None) for
    a rule the others cannot say (a schedule's order, a run name). `expect`, where given, is what every error
    about the key says it must be (one sentence for a key whose rules are easier said together).
    """

    help: str
    choices: tuple[object, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    length: int | None = None
    check: Callable[[Any], str | None] | None = None
    expect: str | None = None
    resume: Resume = "fixed"

    def bounds_text(self) -> str | None:
        """The bounds in words: "positive", ">= 0", "in [0, 1)"; None without bounds."""
        if self.low is None and self.high is None:
            return None
        if self.high is None:
            if self.low == 0:
                return "positive" if self.low_open else ">= 0"
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def accepts_text(self) -> str:
        """Choices, list length and bounds in words ("" when the type says it all)."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(str(choice) for choice in self.choices))
        if self.length is not None:
            parts.append(f"{self.length} items")
        if (bounds := self.bounds_text()) is not None:
            parts.append(bounds)
        return "; ".join(parts)

    def within_bounds(self, number: float) -> bool:
        above = self.low is None or (number > self.low if self.low_open else number >= self.low)
        below = self.high is None or (number < self.high if self.high_open else number <= self.high)
        return above and below


def option(default: Any = dataclasses.MISSING, *, help: str, choices: Iterable[object] | None = None,
           low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           length: int | None = None, check: Callable[[Any], str | None] | None = None, expect: str | None = None,
           resume: Resume = "fixed", default_factory: Callable[[], Any] | None = None) -> Any:
    """A config key's dataclass field and its one definition (`KeyRule`) as the field's metadata.

    A list or dict default is copied for every config (a dataclass field may not share a mutable default).
    """
    rule = KeyRule(help=help, choices=None if choices is None else tuple(choices), low=low, high=high,
                   low_open=low_open, high_open=high_open, length=length, check=check, expect=expect, resume=resume)
    metadata = {"help": help, "rule": rule}
    if default_factory is None and isinstance(default, (list, dict)):
        default_factory = functools.partial(copy.deepcopy, default)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    """One flat config key: the dataclass field that defines it, the class that holds it, its type and rule."""

    name: str
    owner: type  # the class whose field it is (a TrainConfig (sub)class, DataOptions, FolderOptions)
    field: dataclasses.Field
    annotation: object  # the resolved type annotation
    rule: KeyRule

    @property
    def default(self) -> object:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default

    @property
    def type_text(self) -> str:
        """The accepted types in config-file words: "int | null", "true, false or 'auto'"."""
        return " | ".join(_type_words(self.annotation))

    def summary(self) -> str:
        """The help text with what the key accepts and its resume rule: the comment above the key in config.yaml
        and its text in --help-config."""
        accepts = self.rule.accepts_text()
        resume = "; may change on --resume" if self.rule.resume == "may change" else ""
        return self.rule.help + (f" [{accepts}{resume}]" if accepts else f" [{resume[2:]}]" if resume else "")

    def accepts_mapping(self) -> bool:
        """Whether a mapping is a value of this key (a config file's only nested values)."""
        return any(_origin(kind) in (dict, Mapping) for kind in _alternatives(self.annotation))


def _options_class(owner: type) -> type[DataclassInstance]:
    if not dataclasses.is_dataclass(owner):
        raise TypeError(f"{owner.__name__} is not an options class (a dataclass of option(...) fields)")
    return owner


def _nested(annotation: object) -> bool:
    # A field holding another options class, whose keys are flat keys of its owner.
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


@functools.cache
def option_keys(owner: type) -> dict[str, ConfigKey]:
    """Every flat key of the options class `owner` in field order: its own `option` fields, and the keys of a
    nested options class (a field whose type is one) where that field stands."""
    hints = typing.get_type_hints(owner)
    keys: dict[str, ConfigKey] = {}
    for field in dataclasses.fields(_options_class(owner)):
        if "rule" in field.metadata:
            keys[field.name] = ConfigKey(field.name, owner, field, hints[field.name], field.metadata["rule"])
        elif _nested(hints[field.name]):
            keys.update(option_keys(hints[field.name]))
        else:
            raise TypeError(f"{owner.__name__}.{field.name} is neither defined by option(...) nor options")
    return keys


def from_checked(owner: type[Options], values: Mapping[str, Any]) -> Options:
    """An `owner` from flat values already checked by `check_value`: its own fields from `values` (missing ones
    take their defaults), a nested options field built the same way from the same values."""
    hints = typing.get_type_hints(owner)
    fields = {}
    for field in dataclasses.fields(_options_class(owner)):
        if "rule" in field.metadata:
            if field.name in values:
                fields[field.name] = values[field.name]
        else:
            fields[field.name] = from_checked(hints[field.name], values)
    return owner(**fields)


def flat_values(options: object) -> dict[str, Any]:
    """An options object's values by flat key, a nested options object's in its field's place."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(_options_class(type(options))):
        value = getattr(options, field.name)
        if "rule" in field.metadata:
            values[field.name] = value
        else:
            values.update(flat_values(value))
    return values


def check_fields(options: object) -> None:
    """Raise a `ConfigError` naming the first value of `options` (nested options included) that its key's
    definition does not accept; each value must already be of its type (a "3e-4" string is no float here)."""
    for name, value in flat_values(options).items():
        key = option_keys(type(options))[name]
        checked = check_value(key, value)
        if isinstance(value, str) and not isinstance(checked, str):
            # A string read as a number ("3e-4" for a float): parsing a file does that, an options object holds
            # the number.
            raise ConfigError(f"config key {name!r} must be {' or '.join(_type_words(key.annotation))}, got "
                              f"{value!r}")


def is_int(value: object) -> TypeGuard[int]:
    """An integer that is not a bool (YAML's true/false are ints to Python)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, Real) and not isinstance(value, bool)


def _origin(kind: object) -> object:
    return typing.get_origin(kind) or kind


def _is_list(value: object) -> TypeGuard[list | tuple]:
    # A list value, or a tuple one from code (a size as (H, W)); config files hold lists.
    return isinstance(value, (list, tuple))


def _alternatives(annotation: object) -> tuple[object, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return tuple(kind for alternative in typing.get_args(annotation) for kind in _alternatives(alternative))
    if typing.get_origin(annotation) is Literal:
        return tuple(Literal[value] for value in typing.get_args(annotation))
    return (annotation,)


def _type_words(annotation: object) -> list[str]:
    """The values an annotation admits in config-file words: ["int", "null"], ["true", "false", "auto"]."""
    words = []
    for kind in _alternatives(annotation):
        if kind is type(None):
            words.append("null")
        elif typing.get_origin(kind) is Literal:
            words.append(str(typing.get_args(kind)[0]))
        elif _origin(kind) in (list, Sequence):
            words.append("a list")
        elif _origin(kind) in (dict, Mapping):
            words.append("a mapping")
        elif kind is bool:
            words += ["true", "false"]
        else:
            words.append(getattr(kind, "__name__", str(kind)))
    return words


def _matches(kind: object, value: object) -> tuple[bool, object]:
    """Whether `value` is of `kind`, and the value as that kind (ints as floats, YAML's "3e-4" as a float)."""
    if kind is type(None):
        return value is None, value
    if typing.get_origin(kind) is Literal:
        return value in typing.get_args(kind) and isinstance(value, str), value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return is_int(value), value
    if kind is float:
        if _is_number(value):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if kind is str:
        return isinstance(value, str), value
    origin = _origin(kind)
    if origin in (list, Sequence):
        (item_kind,) = typing.get_args(kind) or (object,)
        # Items are checked, not converted: a [progress, side] pair keeps its int side. A Sequence key takes
        # tuples from code too (never a string).
        if not (isinstance(value, list) or (origin is Sequence and isinstance(value, tuple))):
            return False, value
        return all(_item_matches(item_kind, item) for item in value), value
    if origin in (dict, Mapping):
        # Entries are the key's own `check` to judge (a value map's, a palette's).
        return isinstance(value, dict if origin is dict else Mapping), value
    raise TypeError(f"config keys of type {kind} have no check; give the field a plain type")


def _item_matches(kind: object, item: object) -> bool:
    if kind is object:
        return True
    return _is_number(item) if kind is float else _matches(kind, item)[0]


def check_value(key: ConfigKey, value: object) -> Any:
    """`value` checked against `key`'s type and rule; returns it as its type (see `_matches`). A `ConfigError`
    names the key and what it accepts."""
    try:
        return _check_type_and_rule(key, value)
    except ConfigError:
        if key.rule.expect is None:
            raise
        raise ConfigError(f"config key {key.name!r} must be {key.rule.expect}, got {value!r}") from None


def _check_type_and_rule(key: ConfigKey, value: object) -> Any:
    if key.rule.choices is not None and value is not None:  # before the type: "valid values" says more
        wrong = [item for item in (value if _is_list(value) else [value]) if item not in key.rule.choices]
        if wrong:
            raise ConfigError(f"config key {key.name!r} is {wrong[0] if len(wrong) == 1 else wrong!r}; valid "
                              f"values: {', '.join(str(choice) for choice in key.rule.choices)}")
    for kind in _alternatives(key.annotation):
        ok, converted = _matches(kind, value)
        if ok:
            return _check_rule(key, converted)
    words = _type_words(key.annotation)
    either = f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else words[0]
    raise ConfigError(f"config key {key.name!r} must be {either}, got {value!r}")


def _check_rule(key: ConfigKey, value: object) -> object:
    rule, name = key.rule, key.name
    if value is None:
        return value
    items = value if _is_list(value) else [value]
    if rule.length is not None and _is_list(value) and len(value) != rule.length:
        bounds = rule.bounds_text()
        raise ConfigError(f"config key {name!r} must be null or a list of {rule.length} numbers"
                          f"{' ' + bounds if bounds else ''}, got {value!r}")
    if any(_is_number(item) and not rule.within_bounds(item) for item in items):
        bounds = rule.bounds_text()
        what = f"a list of numbers {bounds}" if _is_list(value) else bounds
        raise ConfigError(f"config key {name!r} must be {what}, got {value!r}")
    if rule.check is not None and (problem := rule.check(value)) is not None:
        raise ConfigError(f"config key {name!r} must be {problem}, got {value!r}")
    return value
