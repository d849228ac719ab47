from pathlib import Path

import mnist_pipeline
from mnist_pipeline.workflow.codedeps import code_identity, meaning_digest, package_modules_used, source_meaning

PACKAGE = Path(mnist_pipeline.__file__).parent
REPO = Path(__file__).resolve().parents[1]


def names(paths):
    return {p.relative_to(PACKAGE).as_posix() for p in paths}


def test_follows_imports_transitively_with_package_inits(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from mnist_pipeline.data.splits import prepare_splits\nimport numpy\n")
    found = names(package_modules_used(script, PACKAGE))
    # splits imports parsed and tables; parsed imports idx, download, datasets, fileio.
    assert {"__init__.py", "data/__init__.py", "data/splits.py", "data/parsed.py", "data/tables.py", "data/idx.py", "fileio.py",
            "errors.py"} <= found
    assert "evaluation/metrics.py" not in found and "workflow/config.py" not in found


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
        assert "workflow/logs.py" in found, script
    train = names(package_modules_used(REPO / "workflow/scripts/train.py", PACKAGE))
    assert {"nn/train.py", "nn/model.py", "data/tables.py"} <= train


def test_the_front_ends_depend_on_the_package_not_on_each_other():
    """The command line and the app share package modules, never each other's (issue 13)."""
    cli_uses = names(package_modules_used(PACKAGE / "cli.py", PACKAGE))
    assert "evaluation/modelinfo.py" in cli_uses and not any(name.startswith("app/") for name in cli_uses)
    for page in sorted((PACKAGE / "app").glob("*.py")):
        assert "cli.py" not in names(package_modules_used(page, PACKAGE)), page.name


CODE = '''"""A module."""


def f(x, y=2):
    """Add."""
    # why: the reason
    return x + y


class C:
    "Doc."

    def g(self):
        "Only a docstring."
'''


def test_comments_docstrings_and_formatting_do_not_change_the_meaning():
    same = [
        CODE.replace("# why: the reason", "# reworded entirely"),
        CODE.replace('"""Add."""', '"""Adds y to x, as the tests check."""').replace('"Doc."', "'''Longer doc.'''"),
        CODE.replace("return x + y", "return (x +\n            y)  # wrapped").replace("\n\n\n", "\n\n\n\n"),
        CODE.replace('"""A module."""', "# no module docstring at all"),
    ]
    for text in same:
        assert source_meaning(text) == source_meaning(CODE), text


def test_a_change_in_what_the_code_does_changes_the_meaning():
    different = [
        CODE.replace("return x + y", "return x - y"),
        CODE.replace("y=2", "y=3"),
        CODE.replace('"Only a docstring."', '"Only a docstring."\n        return 1'),
        CODE + "\nZ = 1\n",
        CODE.replace("def g(self)", "def h(self)"),
    ]
    for text in different:
        assert source_meaning(text) != source_meaning(CODE), text


def test_a_string_that_is_not_a_docstring_is_code():
    assert source_meaning("x = 1\n'text'\n") != source_meaning("x = 1\n'other'\n")


def test_meaning_digest_follows_labels_and_content_not_location(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.py").write_text("x = 1\n")
    here = meaning_digest([("pkg/m.py", tmp_path / "a/m.py")])
    assert meaning_digest([("pkg/m.py", tmp_path / "b/m.py")]) == here
    assert meaning_digest([("pkg/other.py", tmp_path / "b/m.py")]) != here
    (tmp_path / "b/m.py").write_text("x = 2\n")
    assert meaning_digest([("pkg/m.py", tmp_path / "b/m.py")]) != here


def test_code_identity_of_a_stage_changes_with_a_module_it_imports_and_no_other(tmp_path):
    pkg = tmp_path / "mnist_pipeline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "used.py").write_text("A = 1\n")
    (pkg / "unused.py").write_text("B = 1\n")
    script = tmp_path / "stage.py"
    script.write_text("from mnist_pipeline.used import A\n")
    before = code_identity(script, pkg)
    (pkg / "unused.py").write_text("B = 2\n")
    assert code_identity(script, pkg) == before
    (pkg / "used.py").write_text("A = 2\n")
    assert code_identity(script, pkg) != before
