"""The package's layout is its architecture: each group of modules imports only its own group
and the groups below it, from the front-ends down to the data and the network."""

from pathlib import Path

import mnist_pipeline
from mnist_pipeline.workflow.codedeps import direct_imports

PACKAGE = Path(mnist_pipeline.__file__).parent
# From the bottom up. The package's __init__ (its version) is below everything.
LAYERS = [
    ("basics", {"", "errors", "fileio", "integrity", "layout", "locks"}),
    ("nn", {"nn"}),
    ("data", {"data"}),
    ("runstore", {"runstore"}),
    ("evaluation", {"evaluation"}),
    ("workflow", {"workflow"}),
    ("front-ends", {"cli", "app"}),
]


def group(module: str) -> tuple[int, str]:
    """(rank, first part under mnist_pipeline) of a dotted module name."""
    first = module.split(".")[1] if "." in module else ""
    for rank, (_, names) in enumerate(LAYERS):
        if first in names:
            return rank, first
    raise AssertionError(f"{module} is in no group of LAYERS: add it where it belongs")


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, ".".join(["mnist_pipeline", *parts]).removesuffix(".__init__")


def test_imports_flow_one_way_from_the_front_ends_down():
    climbing = []
    for path, module in modules():
        (rank, first) = group(module)
        for imported in sorted(direct_imports(path, PACKAGE)):
            (their_rank, their_first) = group(imported)
            if their_rank > rank:
                climbing.append(f"{module} imports {imported}, a group above it")
            elif their_rank == rank == len(LAYERS) - 1 and their_first != first:
                climbing.append(f"{module} imports {imported}: the command line and the app never import each other")
    assert climbing == []


def test_every_module_sits_in_a_group_and_every_group_has_modules():
    assert {group(module)[0] for _, module in modules()} == set(range(len(LAYERS)))
