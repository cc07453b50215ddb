"""Entry-point discovery for connector and provider plugins, each checked against its contract when loaded.

A third party ships a plugin by declaring it under ``ledgerlink.connectors`` or ``ledgerlink.providers`` in its
own package's metadata. What it registers must be a subclass of the contract (connectors.database.contract's
``Connector``, connectors.providers.contract's ``Provider``) with every abstract method implemented and every
overridden method callable as the contract's is, its declarations (``capabilities``, ``Options``) true to its
class; anything else is refused at once with a message that names the plugin and the method, rather than failing
later inside a job.

A plugin's own settings (a connector's ``source.options``, a provider account's ``options``) are a
``PluginOptions`` model declared on the class as ``Options``: unknown keys are refused, naming the key and the
options the plugin has.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.core.errors import ConfigurationError

__all__ = [
    "CONNECTOR_GROUP",
    "PROVIDER_GROUP",
    "PluginOptions",
    "available",
    "contract_problems",
    "load",
]

CONNECTOR_GROUP = "ledgerlink.connectors"
PROVIDER_GROUP = "ledgerlink.providers"
T = TypeVar("T")


def available(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def load(group: str, name: str, contract: type[T]) -> type[T]:
    """The plugin class registered as ``name``, verified to implement ``contract``."""
    found = available(group)
    if name not in found:
        raise ConfigurationError(
            f"no plugin {name!r} in {group}; installed: {', '.join(sorted(found)) or 'none'}"
        )
    plugin = found[name].load()
    where = f"plugin {name!r} in {group} ({found[name].value})"
    if not (isinstance(plugin, type) and issubclass(plugin, contract)):
        raise ConfigurationError(f"{where} is not a {contract.__name__}: it must subclass the contract and pass "
                                 "connectors.testkit")
    problems = contract_problems(plugin, contract)
    if problems:
        raise ConfigurationError(f"{where} does not keep the {contract.__name__} contract: " + "; ".join(problems))
    return plugin


class PluginOptions(BaseModel):
    """A plugin's own settings; subclass it with the plugin's fields and declare it as the class's ``Options``.
    This base has none, so a plugin that declares nothing refuses every key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, options: Mapping[str, Any], where: str, plugin: str) -> Self:
        """``options`` validated; a ConfigurationError naming each bad key under ``where`` (e.g.
        ``accounts.trust.options``) and the options ``plugin`` (e.g. "the stripe provider") has."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            has = ", ".join(cls.model_fields) or "no options"
            problems = "; ".join(
                f"{where}.{'.'.join(map(str, e['loc']))}: "
                + (f"is not an option of {plugin} (it has {has})" if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors())
            raise ConfigurationError(problems) from None


def contract_problems(plugin: type, contract: type) -> list[str]:
    """What keeps ``plugin`` from standing in for ``contract``: methods left abstract, overridden methods whose
    parameters differ from the contract's (a call the engines make would fail inside a job, not at start), and
    declarations the contract's own ``declaration_problems`` finds untrue (always the contract's version)."""
    problems = [f"{plugin.__name__}.{m} is not implemented" for m in sorted(getattr(plugin, "__abstractmethods__",
                                                                                    ()))]
    for method in sorted(_methods(contract)):
        theirs = inspect.getattr_static(plugin, method)
        ours = inspect.getattr_static(contract, method)
        if theirs is ours or not inspect.isfunction(theirs):
            continue
        mismatch = _mismatch(inspect.signature(ours), inspect.signature(theirs))
        if mismatch:
            problems.append(f"{plugin.__name__}.{method}{_shape(theirs)} {mismatch} (the contract: "
                            f"{method}{_shape(ours)})")
    declared = inspect.getattr_static(contract, "declaration_problems", None)
    if isinstance(declared, classmethod):
        problems += declared.__func__(plugin)
    return problems


def _shape(function: object) -> str:
    """A method's parameters without their annotations: what a reader compares."""
    sig = inspect.signature(function)  # type: ignore[arg-type]
    bare = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=bare, return_annotation=inspect.Signature.empty))


def _methods(contract: type) -> set[str]:
    """The contract's public methods, its bases' included (object's left out)."""
    return {name for klass in contract.__mro__ if klass is not object for name, value in vars(klass).items()
            if not name.startswith("_") and inspect.isfunction(value)}


def _mismatch(ours: inspect.Signature, theirs: inspect.Signature) -> str | None:
    """Why a plugin's method cannot be called as the contract's is, or None. It may add parameters with defaults
    and take ``*args``/``**kwargs``; every parameter of the contract must be there, by name and kind."""
    mine = theirs.parameters
    catch_all = {p.kind for p in mine.values()} & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}
    for param in ours.parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        other = mine.get(param.name)
        if other is None:
            if not catch_all:
                return f"has no parameter {param.name!r}"
            continue
        if other.kind != param.kind and not (param.kind in POSITIONAL_OR_KEYWORD and other.kind in
                                              POSITIONAL_OR_KEYWORD):
            return f"takes {param.name!r} as {other.kind.description}, not {param.kind.description}"
        if param.default is not inspect.Parameter.empty and other.default is inspect.Parameter.empty:
            return f"requires {param.name!r}, which the contract lets callers leave out"
    extra = [p.name for p in mine.values() if p.name not in ours.parameters and p.default is inspect.Parameter.empty
             and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    return f"requires {', '.join(map(repr, extra))}, which the contract does not pass" if extra else None


POSITIONAL_OR_KEYWORD = {inspect.Parameter.POSITIONAL_OR_KEYWORD}
