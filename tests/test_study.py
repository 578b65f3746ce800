"""The study runner: cached and resumed runs, aggregation over seeds, refusals, the command."""

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from mobilenets import study as study_module
from mobilenets.data.synthetic import make_image_folder
from mobilenets.published import published_results
from mobilenets.registry import create_model, get_entry
from mobilenets.study import (
    RECIPE,
    RESOLUTIONS,
    STUDIES,
    RunResult,
    Study,
    StudyRun,
    aggregate,
    estimate_seconds,
    plan,
    results_csv,
    results_markdown,
    run_study,
)
from mobilenets.train import TrainingInterrupted

MODEL = "mobilenet_v1_0.25_128"
FAST = {"workers": 0, "threads": 1}


def go(study: Study, out: Path, data: Path, **kw) -> study_module.StudyResult:
    """``run_study`` with one seed, one thread, no loader processes."""
    return run_study(study, out=out, data=str(data), seeds=1, execution=FAST, **{"log": lambda _: None, **kw})


def tiny_study(*extra: StudyRun) -> Study:
    """Two α at 32 px, the second distilled from the first, 1 epoch; ``extra`` runs appended."""
    runs = (
        StudyRun(
            label="wide", model=MODEL, width_mult=0.5, resolution=32, series="plain", published="mobilenet_v1_0.5_128"
        ),
        StudyRun(label="thin", model=MODEL, resolution=32, series="distilled", teacher="wide"),
        *extra,
    )
    return Study(
        name="tiny",
        title="Tiny study",
        claim="wider is better",
        runs=runs,
        full={"epochs": 1, "train_limit": None, "val_limit": None},
        recipe={**RECIPE, "batch_size": 8},
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"), num_classes=3, per_class=8, val_per_class=4)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """The trainer's calls made by the runner: (run folder name, resume)."""
    made: list[tuple[str, bool]] = []
    real = study_module.train

    def counting(config, resume=False):
        made.append((Path(config.out).name, resume))
        return real(config, resume=resume)

    monkeypatch.setattr(study_module, "train", counting)
    return made


def test_study_runs_then_caches_everything(data: Path, tmp_path: Path, calls: list) -> None:
    lines: list[str] = []
    result = go(tiny_study(), tmp_path, data, log=lines.append)
    assert [resume for _, resume in calls] == [False, False]
    assert len(lines) == 2 and lines[0].startswith("[1/2] wide") and "trained" in lines[1] and "top-1" in lines[1]
    teacher = json.loads((tmp_path / "runs" / calls[1][0] / "config.json").read_text())["teacher"]
    assert teacher == str((tmp_path / "runs" / calls[0][0] / "last.safetensors").absolute())
    names = {path.name for path in result.files}
    assert names == {"results.csv", "results.md", "accuracy_vs_mult_adds.png"}
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert [row["label"] for row in rows] == ["wide", "thin"]
    assert int(rows[0]["mult_adds"]) > int(rows[1]["mult_adds"]) > 0
    assert "| wide" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy_vs_mult_adds.png").read_bytes()[:4] == b"\x89PNG"

    calls.clear()
    again = go(tiny_study(), tmp_path, data, log=lines.append)
    assert calls == [] and {r.status for r in again.results} == {"cached"}
    assert [r.top1 for r in again.results] == [r.top1 for r in result.results]


def test_interrupted_study_resumes(data: Path, tmp_path: Path, calls: list, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = study_module.train

    def stop_at_second(config, resume=False):
        if len(calls) == 1:
            raise TrainingInterrupted(2, "SIGINT received")
        return counting(config, resume=resume)

    monkeypatch.setattr(study_module, "train", stop_at_second)
    with pytest.raises(TrainingInterrupted):
        go(tiny_study(), tmp_path, data)
    first = calls[0][0]
    calls.clear()
    monkeypatch.setattr(study_module, "train", counting)
    go(tiny_study(), tmp_path, data)
    assert len(calls) == 1 and calls[0][0] != first  # only the run that had not finished

    # A run folder with a checkpoint but no report (stopped between its last epoch and its report).
    thin = tmp_path / "runs" / calls[0][0]
    (thin / "report.json").unlink()
    calls.clear()
    lines: list[str] = []
    result = go(tiny_study(), tmp_path, data, log=lines.append)
    assert calls == [(thin.name, True)] and "resumed" in lines[1]
    assert [r.status for r in result.results] == ["cached", "resumed"]


def test_run_stopped_mid_way_is_continued_not_restarted(data: Path, tmp_path: Path, calls: list) -> None:
    study = Study(**{**vars(tiny_study()), "runs": tiny_study().runs[:1], "full": {"epochs": 2}})
    (done,) = go(study, tmp_path, data).results
    # Its folder as a run stopped after epoch 1 leaves it: that epoch's checkpoint, no report.
    run_dir = tmp_path / "runs" / calls[0][0]
    (run_dir / "previous.safetensors").replace(run_dir / "last.safetensors")
    (run_dir / "report.json").unlink()
    calls.clear()
    (again,) = go(study, tmp_path, data).results
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert calls == [(run_dir.name, True)] and again.status == "resumed" and [r["epoch"] for r in records] == [1, 2]
    assert again.top1 == done.top1  # epoch 2 trained again from epoch 1's checkpoint: the same result


def test_a_changed_run_folder_is_refused(data: Path, tmp_path: Path, calls: list) -> None:
    study = Study(**{**vars(tiny_study()), "runs": tiny_study().runs[:1]})
    go(study, tmp_path, data)
    config = tmp_path / "runs" / calls[0][0] / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "lr": 0.5}))
    with pytest.raises(ValueError, match="holds a run of another config"):
        go(study, tmp_path, data)


def _result(label: str, top1: float, seed: int = 0, classes: tuple[str, ...] = ("a", "b")) -> RunResult:
    return RunResult(
        label=label, seed=seed, model=label, top1=top1, mult_adds=2_000_000, params=300_000, classes=classes,
        status="cached",
    )  # fmt: skip


def test_aggregation_mean_std_and_table() -> None:
    study = tiny_study()
    results = [_result("wide", 80.0, 0), _result("wide", 82.0, 1), _result("wide", 84.0, 2), _result("thin", 70.0)]
    wide, thin = aggregate(study, results)
    assert (wide.seeds, wide.top1_mean, wide.top1_std) == (3, 82.0, 2.0)
    assert (thin.seeds, thin.top1_mean, thin.top1_std) == (1, 70.0, None)
    assert wide.published_top1 == published_results()["mobilenet_v1_0.5_128"].top1 and thin.published_top1 is None
    table = results_markdown(study, [wide, thin], settings="s")
    cells = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in table.splitlines()
        if line.startswith("| wide") or line.startswith("| thin")
    }
    published = f"{wide.published_top1:.1f} (mobilenet_v1_0.5_128, {wide.published_source})"
    assert cells["wide"] == ["wide", "32", "2.00", "0.300", "82.00 ± 2.00", "3", published]
    assert cells["thin"] == ["thin", "32", "2.00", "0.300", "70.00 ± –", "1", ""]
    assert "wider is better" in table
    rows = list(csv.DictReader(io.StringIO(results_csv([wide, thin]))))
    assert rows[0]["top1_std"] == "2.0" and rows[1]["top1_std"] == ""
    with pytest.raises(ValueError, match="classify different classes"):
        aggregate(study, [_result("wide", 80.0), _result("thin", 70.0, classes=("a", "c"))])


def test_accuracy_is_the_last_epoch_not_the_best(tmp_path: Path) -> None:
    (planned,) = [p for p in plan(tiny_study(), out=tmp_path, seeds=1) if p.run.label == "wide"]
    run_dir = Path(planned.config.out)
    run_dir.mkdir(parents=True)
    epochs = [{"epoch": 1, "val_top1": 0.9}, {"epoch": 2, "val_top1": 0.8}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))
    report = {"model": "m", "mult_adds": 5, "params": 3, "evaluation": {"classes": ["a"]}}
    (run_dir / "report.json").write_text(json.dumps(report))
    planned = replace(planned, config=replace(planned.config, epochs=2))
    assert study_module._result(planned, "cached").top1 == pytest.approx(80.0)


def test_runs_disagreeing_on_data_are_refused(data: Path, tmp_path: Path, calls: list) -> None:
    other = StudyRun(label="other", model=MODEL, resolution=32, options={"data": str(tmp_path)})
    with pytest.raises(ValueError, match="disagree on data") as info:
        go(tiny_study(other), tmp_path / "out", data)
    assert calls == [] and len(str(info.value).splitlines()) == 1
    with pytest.raises(ValueError, match="disagree on val_limit"):
        plan(tiny_study(StudyRun(label="x", model=MODEL, resolution=32, options={"val_limit": 2})), out=tmp_path)


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (StudyRun(label="x", model=MODEL, resolution=32, options={"nope": 1}), "unknown option"),
        (StudyRun(label="x", model=MODEL, resolution=32, teacher="later"), "must be an earlier run"),
        (StudyRun(label="wide", model=MODEL, resolution=32), "labels must differ"),
        (StudyRun(label="x", model=MODEL, resolution=16), "resolution must be in"),
    ],
)
def test_bad_runs_are_refused(tmp_path: Path, run: StudyRun, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(tiny_study(run), out=tmp_path)


def test_declared_studies_plan_and_name_published_models(tmp_path: Path) -> None:
    known = published_results()
    assert tuple(r // 4 for r in (224, 192, 160, 128)) == RESOLUTIONS
    for study in STUDIES.values():
        for seeds, quick in ((1, True), (3, False)):
            planned = plan(study, out=tmp_path, seeds=seeds, quick=quick)
            assert len(planned) == seeds * len(study.runs) and len({p.key for p in planned}) == len(planned)
        for run in study.runs:
            get_entry(run.model)
            assert run.published is None or run.published in known, run.published
    assert [p.key for p in plan(STUDIES["grid"], out=tmp_path, quick=True)] != [
        p.key for p in plan(STUDIES["grid"], out=tmp_path)
    ][:16]


def test_a_teacher_trained_longer_than_its_students(tmp_path: Path) -> None:
    study = STUDIES["distillation"]
    for quick in (True, False):
        epochs = {p.run.label: p.config.epochs for p in plan(study, out=tmp_path, seeds=1, quick=quick)}
        base = (study.quick if quick else study.full)["epochs"]
        assert epochs.pop("teacher 1.0 MobileNet") == 3 * base and set(epochs.values()) == {base}
    # The estimate counts the teacher's extra epochs.
    alike = replace(study, runs=tuple(replace(run, epochs_scale=1) for run in study.runs))
    assert estimate_seconds(study, quick=False) > estimate_seconds(alike, quick=False)


def test_cli_list_help_and_errors(cli, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = cli("study", "--list")
    assert code == 0 and all(name in out for name in STUDIES) and "full min" in out
    with pytest.raises(SystemExit) as info:
        cli("study", "--help")
    assert info.value.code == 0 and "--quick" in capsys.readouterr().out
    for argv, fragment in [
        (["study", "nope", "--out", "x"], "study 'nope' is unknown"),
        (["study", "grid"], "--out DIR is required"),
        (["study"], "a study name is required"),
        (["study", "grid", "--seeds", "0", "--out", "x"], "seeds must be an integer in [1, 100]"),
        (["study", "width", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")], "none' is neither"),
    ]:
        code, out, err = cli(*argv)
        assert code == 2 and out == "" and fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any run folder is made


def test_trainer_trains_a_variant_at_a_width_not_registered(data: Path, tmp_path: Path) -> None:
    """Table 4 at α = 0.25 trains the full-convolution variant, registered at α = 1 only."""
    from mobilenets.train import TrainConfig, train
    from mobilenets.weights import load_model

    config = TrainConfig(
        model="mobilenet_v1_conv_1.0_224", width_mult=0.25, data=str(data), out=str(tmp_path / "run"),
        resolution=32, epochs=1, batch_size=8, ema_decay=0.0, **FAST,
    )  # fmt: skip
    result = train(config)
    assert result.model == "mobilenet_v1_conv_0.25_32"
    model = load_model(tmp_path / "run" / "best.safetensors")
    assert model.meta.name == "mobilenet_v1_conv_0.25_32" and model.width_mult == 0.25
    assert create_model("mobilenet_v2_0.25_56").meta.resolution == 56
    assert create_model("shufflenet_g3_0.75").meta.name == "shufflenet_g3_0.75"


def test_plot_axes_say_what_and_in_which_unit() -> None:
    study = tiny_study()
    rows = aggregate(study, [_result("wide", 80.0, 0), _result("wide", 84.0, 1), _result("thin", 70.0)])
    ax, right = study_module.study_figure(study, rows, "params").axes
    assert ax.get_xscale() == "log" and "parameters (millions)" in ax.get_xlabel()
    assert "top-1" in ax.get_ylabel() and "ImageNet" in right.get_ylabel()
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "plain", "distilled", "published ImageNet top-1 (right axis)",
    ]  # fmt: skip
