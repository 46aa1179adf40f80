"""Sweep plumbing without running a model: cell folder names, failure records, the sweep task's
number, the summary, and every shipped experiment / search / launcher config composing."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kfr.cell.folder import clear_failure, format_failures, record_failure, scan_cells
from kfr.core.errors import UserError
from kfr.core.identity import cell_dirname, relevant_overrides
from kfr.sweeps.summary import check_required_settings
from kfr.sweeps.task import FAILED_SCORE, objective
from tests.conftest import CONF_DIR, REPO_ROOT


def _cell(*, retrieve: bool = True, finetune: bool = True, paraphrases: int = 1) -> dict:
    """The parts of a cell's config its folder name depends on."""
    reads = (["retriever"] if retrieve else []) + (
        ["finetune", "trainer", "augment"] if finetune else []
    )
    method = {"name": "m", "retrieve": retrieve, "finetune": finetune, "reads": reads}
    augment = {"paraphrases": paraphrases, "source": "template"}
    return {"method": method, "augment": augment, "finetune": {"mode": "full"}}


def job_dirname(overrides, _exclude=(), retrieve=True, finetune=True, paraphrases=1) -> str:
    # Overrides that never identify a cell (experiment=...) are declared in kfr.core.identity.
    return cell_dirname(
        overrides, _cell(retrieve=retrieve, finetune=finetune, paraphrases=paraphrases)
    )


def test_cell_folder_leaves_out_settings_the_method_ignores():
    grid = ["method=base", "retriever.k=3", "augment.paraphrases=4", "seed=1", "experiment=demo"]
    assert job_dirname(grid, ["experiment"], False, False, 4) == "method=base,seed=1"
    rag = ["method=rag", "retriever.k=3", "augment.paraphrases=4", "seed=1"]
    assert job_dirname(rag, [], True, False, 4) == "method=rag,retriever.k=3,seed=1"
    ft_reg = ["method=ft", "augment.paraphrases=0", "augment.source=llm", "retriever.k=3"]
    assert relevant_overrides(ft_reg, _cell(retrieve=False, finetune=True, paraphrases=0)) == [
        "augment.paraphrases=0",
        "method=ft",
    ]
    ft_par = ["method=ft", "augment.paraphrases=4", "augment.source=llm", "+finetune.lr=1e-5"]
    assert relevant_overrides(ft_par, _cell(retrieve=False, finetune=True, paraphrases=4)) == [
        "+finetune.lr=1e-5",
        "augment.paraphrases=4",
        "augment.source=llm",
        "method=ft",
    ]


def test_cell_folder_names_are_one_safe_path_component():
    name = job_dirname(["data.questions=/data/ce/v2/q.jsonl", "seed=0"], [], True, True, 0)
    assert "/" not in name and name.startswith("data.questions=q.jsonl~")
    other = job_dirname(["data.questions=/data/ce/v1/q.jsonl", "seed=0"], [], True, True, 0)
    assert other != name  # same file name, other folder: another cell
    assert job_dirname([], [], True, True, 0) == "defaults"
    long = job_dirname([f"model.path=m{i}" for i in range(60)], [], True, True, 0)
    assert len(long.encode()) <= 180 and long == job_dirname(
        [f"model.path=m{i}" for i in range(60)], [], True, True, 0
    )


def test_failure_records_are_found_grouped_and_cleared(tmp_path):
    for i in range(5):
        folder = tmp_path / f"method=base,seed={i}"
        folder.mkdir()
        try:
            raise UserError("question file not found", path="/x/q.jsonl")
        except UserError as err:
            record_failure(folder, err)
    done = tmp_path / "method=rag,seed=0"
    (done / ".hydra").mkdir(parents=True)
    (done / "results.json").write_text(json.dumps({"metrics": {"acc": 0.5}}))
    unfinished = tmp_path / "method=ft,seed=0"
    (unfinished / ".hydra").mkdir(parents=True)
    cells = scan_cells([tmp_path])
    assert [c.status for c in cells].count("failed") == 5
    assert {c.path.name: c.status for c in cells}[done.name] == "complete"
    assert {c.path.name: c.status for c in cells}[unfinished.name] == "incomplete"
    failure = json.loads((tmp_path / "method=base,seed=0" / "failed.json").read_text())
    assert failure["error"] == "UserError" and failure["user_error"] is True
    assert "question file not found" in failure["message"] and "Traceback" in failure["traceback"]
    lines = format_failures(cells)
    assert lines[0].startswith("  FAILED x5 cells: UserError: /x/q.jsonl: question file not found")
    assert any("NO RESULT method=ft,seed=0" in line for line in lines)
    clear_failure(tmp_path / "method=base,seed=0")
    assert not (tmp_path / "method=base,seed=0" / "failed.json").exists()


def test_sweep_objective_is_never_nan():
    assert objective({"metrics": {"acc": 0.75}}, "acc") == 0.75
    assert objective({"metrics": {"acc": float("nan")}}, "acc") == FAILED_SCORE
    assert objective({"metrics": {"acc": 0.75}}, "recall_at_k") == FAILED_SCORE
    assert not math.isnan(objective({}, "acc"))


def _compose(overrides: list[str]):
    import kfr.core.identity  # noqa: F401  (schema and resolvers)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_to_a_stable_sweep_of_real_settings(name):
    cfg = _compose([f"experiment={name}"])
    assert cfg.experiment_name == name
    params = cfg.hydra.sweeper.params
    assert "seed" in params, "seeds are a sweep axis of every experiment"
    groups = {p.parent.name for p in CONF_DIR.glob("*/*.yaml")}
    for key, values in params.items():
        if key in groups:  # a config group: every option must exist
            for option in str(values).split(","):
                assert (CONF_DIR / key / f"{option}.yaml").is_file(), (key, option)
        else:  # a setting: it must exist in the schema
            assert OmegaConf.select(cfg, key, throw_on_missing=False) is not None or key in (
                "seed",
            ), key
    # Stable (not timestamped): the same command resumes the same sweep.
    assert str(cfg.hydra.sweep.dir).endswith(f"{name}/sweep")
    assert "now" not in OmegaConf.to_yaml(cfg.hydra.sweep)


def test_optuna_search_and_slurm_profiles_compose():
    cfg = _compose(["hparams_search=ft_lr_epochs"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"finetune.lr", "finetune.epochs"}
    assert cfg.method.name == "ft" and cfg.optimized_metric == "acc"
    for profile in ("slurm_gpu", "slurm_cpu"):
        launcher = _compose([f"hydra/launcher={profile}"]).hydra.launcher
        assert launcher._target_.endswith("SlurmLauncher")
        assert launcher.tasks_per_node == (launcher.gpus_per_node or 1)
        assert launcher.max_num_timeout > 0  # timeouts requeue
        OmegaConf.to_container(launcher, resolve=True)  # every interpolation resolves


def test_sweep_stops_up_front_when_every_cell_would_miss_a_setting():
    def sweep(task: list[str], params: dict[str, str]):
        hydra = {"sweeper": {"params": params}, "overrides": {"task": task}}
        return OmegaConf.create({"data": {"questions": "???"}, "seed": 0, "hydra": hydra})

    with pytest.raises(UserError, match=r"data\.questions"):
        check_required_settings(sweep(["seed=1"], {}))
    check_required_settings(sweep(["data.questions=q.jsonl"], {}))  # given on the command line
    check_required_settings(sweep([], {"data.questions": "a.jsonl,b.jsonl"}))  # by the grid


def test_submit_script_quotes_every_argument_and_cleans_the_driver_environment(tmp_path):
    env = {**os.environ, "KFR_SUBMIT_DRY_RUN": "1", "KFR": "/opt/kfr", "KFR_DRIVER_TIME": "1:00:00"}
    script = subprocess.run(
        [
            "bash",
            str(REPO_ROOT / "slurm" / "submit.sh"),
            "experiment=demo",
            "data.questions=/a b/q",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert "#SBATCH --time=1:00:00" in script
    assert "exec /opt/kfr -m experiment=demo data.questions=/a\\ b/q" in script
    assert "unset" in script and "SLURM_CONF" in script
    assert not (tmp_path / "slurm-logs").exists()  # a dry run writes nothing


def test_relevant_overrides_match_hydra_override_dirname_order():
    # Hydra sorts override_dirname's items; kfr's names keep that order.
    assert relevant_overrides(["seed=1", "method=rag", "model=tiny_llama"], _cell()) == [
        "method=rag",
        "model=tiny_llama",
        "seed=1",
    ]
    assert Path(job_dirname(["b=1", "a=2"])).name == "a=2,b=1"


def test_a_full_disk_stops_the_sweep_with_exit_code_2_instead_of_failing_each_cell(
    tmp_path, monkeypatch, capsys
):
    import errno

    from kfr.sweeps import task
    from tests.conftest import compose_config

    def no_room(cfg, run_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "results.json"))

    monkeypatch.setattr(task, "run_tracked_cell", no_room)
    with pytest.raises(SystemExit) as done:
        task.run_sweep_cell(compose_config(["logger=none"]), tmp_path / "cell")
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kfr: error: {tmp_path / 'cell' / 'results.json'}")
    assert "no space left" in err[0] and not (tmp_path / "cell" / "failed.json").exists()


def test_the_sweep_summary_prints_accuracy_per_probe_family(tmp_path, capsys):
    from kfr.sweeps.summary import SweepSummary
    from tests.unit.test_report import _with_probes, write_cell

    common = {"model": "smollm2_135m", "data": "novel_facts"}
    _with_probes(write_cell(tmp_path, **common, method="rag", k=3, acc=0.8), {"reversal": 0.51})
    qa_ft = write_cell(tmp_path, **common, method="qa_ft", acc=0.9)
    _with_probes(qa_ft, {"reversal": 0.21}, forgetting=0.06)
    SweepSummary(report=True, print_report=True)._summarise(tmp_path)
    printed = capsys.readouterr().out
    assert "2 cells, 2 with results" in printed
    header = next(line for line in printed.splitlines() if line.startswith("| Model | Task | Arm"))
    assert "| Acc | Acc reversal | Seeds |" in header
    assert "| reversal | 0.250 | RAG K=3 | 0.510±0.050 | QA-FT 0.210±0.050 | +0.300 |" in printed
    assert (tmp_path / "report" / "acc_vs_forgetting.png").is_file()
