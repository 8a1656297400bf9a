"""MkDocs hook: option tables generated from the pydantic configs, so the docs cannot drift from the code.

A page writes ``<!-- mlipkit:options NAME [prefix=P] [fields=A,B] -->`` on a
line of its own, NAME being a registered model (``nequip``) or a config class
by its dotted path (``mlipkit.train.config.TrainConfig``); ``fields`` keeps
some of its options, ``prefix`` is put before the option names. The line becomes a table
of the options: name, other accepted spellings, default and meaning (the
field's docstring). For a model the table is split into the options of the
model itself, those shared by NequIP and MACE, and those of every model.
Fields whose type is itself a config (``coulomb``, ``optimizer``) are listed
as dotted rows. A field without a docstring, or a name that resolves to
nothing, fails the build.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any, Iterator

from mkdocs.exceptions import PluginError
from pydantic import AliasChoices, BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

MARKER = re.compile(r"^<!-- mlipkit:options (?P<name>[\w.]+)(?: prefix=(?P<prefix>[\w.\[\]]+))?(?: fields=(?P<fields>[\w,]+))? -->$", re.MULTILINE)
HEADER = "| option | also accepted as | default | meaning |\n|---|---|---|---|"


def config_class(name: str) -> type[BaseModel]:
    """A registered model's config class, or a config class by dotted path."""
    from mlipkit.models.registry import REGISTRY

    if name in REGISTRY:
        return REGISTRY[name].config_class
    module_name, _, class_name = name.rpartition(".")
    try:
        klass = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise PluginError(f"mlipkit:options {name}: neither a registered model nor a config class ({error})") from None
    if not (isinstance(klass, type) and issubclass(klass, BaseModel)):
        raise PluginError(f"mlipkit:options {name}: {klass!r} is not a pydantic config class")
    return klass


def spellings(klass: type[BaseModel], field_name: str) -> list[str]:
    """The other names an option is accepted under: the class's SPELLINGS and the field's alias choices."""
    names: list[str] = []
    for base in reversed(klass.__mro__):
        names += getattr(base, "SPELLINGS", {}).get(field_name, ())
    alias = klass.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices):
        names += [choice for choice in alias.choices if isinstance(choice, str) and choice != field_name]
    return list(dict.fromkeys(names))


def without_defaults(value: Any) -> Any:
    """Configs inside a default as only what differs from their own defaults ({} is all defaults)."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_defaults=True)
    if isinstance(value, dict):
        return {key: without_defaults(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_defaults(item) for item in value]
    return value


def yaml_value(value: Any) -> str:
    """A default as it is written in a YAML config."""
    value = to_jsonable_python(without_defaults(value))
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False).replace('"', "")


def default_text(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    return f"`{yaml_value(value)}`"


def nested_config(annotation: Any) -> type[BaseModel] | None:
    """The config class a field holds itself (not optional, not in a container), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def option_rows(klass: type[BaseModel], prefix: str = "", fields: list[str] | None = None) -> Iterator[tuple[str, str, str, str]]:
    """(option, spellings, default, meaning) for each field, nested configs as dotted rows."""
    for name in fields if fields is not None else list(klass.model_fields):
        field = klass.model_fields[name]
        if not field.description:
            raise PluginError(f"{klass.__module__}.{klass.__qualname__}.{name} has no docstring: document the option")
        option = f"{prefix}{name}"
        nested = nested_config(field.annotation)
        if nested is not None:
            yield from option_rows(nested, f"{option}.")
            continue
        meaning = " ".join(field.description.split()).replace("|", "\\|")
        yield f"`{option}`", ", ".join(f"`{s}`" for s in spellings(klass, name)), default_text(field), meaning


def table(rows: Iterator[tuple[str, str, str, str]]) -> str:
    return "\n".join([HEADER] + ["| " + " | ".join(row) + " |" for row in rows])


def declaring_class(klass: type[BaseModel], field_name: str) -> type:
    """The most derived class in the MRO that declares the field."""
    return next(base for base in klass.__mro__ if field_name in getattr(base, "__annotations__", {}))


def options_markdown(name: str, prefix: str = "", fields: list[str] | None = None) -> str:
    """The table (or, for a whole registered model, the tables by where the options are declared) for one marker."""
    from mlipkit.models.config import MessagePassingConfig, PotentialConfig
    from mlipkit.models.registry import REGISTRY

    klass = config_class(name)
    unknown = [f for f in fields or [] if f not in klass.model_fields]
    if unknown:
        raise PluginError(f"mlipkit:options {name}: no options {unknown}")
    if name not in REGISTRY or fields:
        return table(option_rows(klass, f"{prefix}." if prefix else "", fields))
    own = f"Options of `{name}`"
    titles = {MessagePassingConfig: "Shared by NequIP and MACE", PotentialConfig: "Shared by every model"}
    groups: dict[str, list[str]] = {own: []}
    for field_name in klass.model_fields:
        groups.setdefault(titles.get(declaring_class(klass, field_name), own), []).append(field_name)
    return "\n\n".join(f"**{title}**\n\n" + table(option_rows(klass, "", fields)) for title, fields in groups.items() if fields)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = MARKER.sub(
        lambda match: options_markdown(match["name"], match["prefix"] or "", match["fields"] and match["fields"].split(",")),
        markdown,
    )
    for line in markdown.splitlines():
        if line.startswith("<!-- mlipkit:options"):
            raise PluginError(f"{page.file.src_path}: malformed options marker {line!r}")
    return markdown
