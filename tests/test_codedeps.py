from pathlib import Path

import mnist_pipeline
from mnist_pipeline.codedeps import package_modules_used

PACKAGE = Path(mnist_pipeline.__file__).parent
REPO = Path(__file__).resolve().parents[1]


def names(paths):
    return {p.relative_to(PACKAGE).as_posix() for p in paths}


def test_follows_imports_transitively_with_package_inits(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from mnist_pipeline.splits import prepare_splits\nimport numpy\n")
    found = names(package_modules_used(script, PACKAGE))
    # splits imports parsed and tables; parsed imports idx, download, datasets, fileio.
    assert {"__init__.py", "splits.py", "parsed.py", "tables.py", "idx.py", "fileio.py", "errors.py"} <= found
    assert "metrics.py" not in found and "config.py" not in found


def test_from_package_import_submodule_and_relative_imports(tmp_path):
    pkg = tmp_path / "mnist_pipeline"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import thing\n")
    (pkg / "sub" / "a.py").write_text("from . import b\nfrom ..top import x\n")
    (pkg / "sub" / "b.py").write_text("")
    (pkg / "top.py").write_text("")
    (pkg / "unused.py").write_text("")
    script = tmp_path / "s.py"
    script.write_text("from mnist_pipeline import sub\n")
    assert names_in(pkg, package_modules_used(script, pkg)) == {"__init__.py", "sub/__init__.py", "sub/a.py", "sub/b.py", "top.py"}


def names_in(pkg, paths):
    return {p.relative_to(pkg).as_posix() for p in paths}


def test_every_workflow_script_reaches_its_modules():
    for script in sorted((REPO / "workflow/scripts").glob("*.py")):
        found = names(package_modules_used(script, PACKAGE))
        assert "logs.py" in found, script
    train = names(package_modules_used(REPO / "workflow/scripts/train.py", PACKAGE))
    assert {"nn/train.py", "nn/model.py", "tables.py"} <= train


def test_the_front_ends_depend_on_the_package_not_on_each_other():
    """The command line and the app share package modules, never each other's (issue 13)."""
    cli_uses = names(package_modules_used(PACKAGE / "cli.py", PACKAGE))
    assert "modelinfo.py" in cli_uses and not any(name.startswith("app/") for name in cli_uses)
    for page in sorted((PACKAGE / "app").glob("*.py")):
        assert "cli.py" not in names(package_modules_used(page, PACKAGE)), page.name
