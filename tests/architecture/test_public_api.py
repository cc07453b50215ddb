"""The plugin contracts and their kits say what they export (``__all__``, as httpx does): every exported name is
there, nothing defined in the module is public without being exported, and the names a plugin author builds on
stay exported."""

from __future__ import annotations

import importlib
import inspect

import pytest

# What a connector or provider written outside this package is built on and tested with (docs/adding-a-*.md).
BUILT_ON = {
    "connectors.database.contract": {"Connector", "Position", "Window", "Batch", "EntityInfo", "RowError",
                                     "Rehearsal", "BulkRead"},
    "connectors.providers.contract": {"Provider", "DirectDebitProvider", "PayoutProvider", "LinkSpec",
                                      "ProviderLink", "ProviderEvent", "EventPage", "LinkStatus", "EventKind"},
    "connectors.testkit.connector": {"ConnectorContract", "Firm", "Dialect", "DIALECTS"},
    "connectors.testkit.provider": {"ProviderContract", "PayoutContract", "World"},
    "connectors.testkit.directdebit": {"DirectDebitContract", "DirectDebitWorld", "Collects"},
    "connectors.testkit.databases": {"temp_database", "TempDatabase", "in_ci"},
    "connectors.testkit.fakehttp": {"FakeAPI", "Request", "json_response"},
    "connectors.plugins": {"load", "available", "contract_problems", "CONNECTOR_GROUP", "PROVIDER_GROUP"},
}


@pytest.mark.parametrize("name", sorted(BUILT_ON))
def test_the_module_exports_what_it_defines_and_what_plugins_build_on(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "a name is exported twice"
    assert [n for n in module.__all__ if not hasattr(module, n)] == []
    defined = {n for n, v in vars(module).items() if not n.startswith("_") and (inspect.isclass(v)
               or inspect.isfunction(v)) and getattr(v, "__module__", None) == name}
    assert defined - exported == set(), "public but not in __all__: export it or make it private (_name)"
    assert BUILT_ON[name] - exported == set()
