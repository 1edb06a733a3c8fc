"""A zoo plugin: two numpy models listed lazily by a provider (namespace "zoo")."""

from cifarfw import hookimpl
from cifarfw.errors import UsageError
from cifarfw.specs import ModelProviderSpec, ModelSpec

CIFARFW_HOOK_API = 2
NAMES = ("tiny", "wide")


def _spec(name):
    if name not in NAMES:
        raise UsageError(f"the zoo has no model {name!r}")
    from fakes import _factory

    return ModelSpec(f"zoo/{name}", "numpy", _factory, recipes={"zoo": {"epochs": 1}}, description=f"{name} softmax")


@hookimpl
def register_model_providers(register):
    register(ModelProviderSpec("zoo", lambda: list(NAMES), _spec, "numpy"))
