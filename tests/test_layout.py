"""The results layout: the contract's paths, one module that spells them, and patterns for the rules."""

from pathlib import Path

from mnist_pipeline.layout import RESULTS, DatasetLayout

REPO = Path(__file__).resolve().parents[1]


def test_the_contracts_paths():
    fashion = DatasetLayout(RESULTS, "fashion-mnist")
    assert fashion.raw == "results/fashion-mnist/raw"
    assert fashion.parsed("dataset.json") == "results/fashion-mnist/parsed/dataset.json"
    assert [fashion.prepared(split) for split in ("train", "val", "test")] == [
        f"results/fashion-mnist/prepared/{split}.parquet" for split in ("train", "val", "test")
    ]
    assert fashion.trained("baseline") == ["results/fashion-mnist/baseline/model.npz", "results/fashion-mnist/baseline/metrics.json"]
    assert fashion.final_outputs(["a", "b"])[-2:] == ["results/fashion-mnist/report.html", "results/fashion-mnist/report.md"]
    assert len(fashion.final_outputs(["a", "b"])) == 6


def test_the_rules_patterns_keep_their_wildcards():
    patterns = DatasetLayout()
    assert patterns.run(leaf="model.npz") == "results/{dataset}/runs/{run}/model.npz"
    assert patterns.experiment(leaf="run.json") == "results/{dataset}/{experiment}/run.json"
    assert patterns.log("publish/{experiment}") == "results/{dataset}/logs/publish/{experiment}.log"
    assert patterns.progress() == "results/{dataset}/runs/{run}/progress.jsonl"


def test_no_rule_or_front_end_spells_the_layout_itself():
    """Paths under results/ come from layout.py; a literal would drift from it unseen."""
    spelled = []
    for path in [*REPO.glob("workflow/rules/*.smk"), REPO / "Snakefile", *REPO.glob("src/mnist_pipeline/app/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if '"results/' in line or "'results/" in line:
                spelled.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert spelled == []
