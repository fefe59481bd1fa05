"""Run one experiment from a validated config: build data, model and algorithm, simulate, write results.

Everything that can fail because of user input (config, data files, model/data mismatch) is checked
in :func:`prepare`, before anything is written to the output folder.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

import hamrah
from hamrah.algorithms import build
from hamrah.algorithms.base import Algorithm, check_buffers
from hamrah.algorithms.local import targets
from hamrah.core.errors import ConfigError
from hamrah.core.files import write_atomic
from hamrah.core.params import num_parameters
from hamrah.core.records import accuracy_summary, record_line
from hamrah.data import Dataset, FederatedDataset, describe, federate, load_dataset
from hamrah.experiments.config import ExperimentConfig, user_task
from hamrah.experiments.config_resolve import algorithm_hyperparameters, example_ledger, heterogeneity, pipeline_spec
from hamrah.experiments.export import remove_checkpoint, write_model
from hamrah.experiments.plots import plot_curves
from hamrah.experiments.resuming import Checkpoints, Resumed, resume_from, write_rows
from hamrah.observe.runs import write_failure
from hamrah.observe.tracking import Tracking
from hamrah.simulation import RoundRecord, SimulationConfig, SimulationResult, Simulator, seeded
from hamrah.simulation.resume import resume_problem
from hamrah.task import ClassificationTask, Task, builtin_task, load_task, task_dataset
from hamrah.task.base import call_user
from hamrah.task.checks import check_finite_loss, check_loss, check_metrics, check_model, check_output
from hamrah.task.kinds import check_label_range

if TYPE_CHECKING:  # the pipeline's libraries (dp_accounting, tenseal, phe) load only for a run that uses them
    from hamrah.pipeline import PipelineSpec


def build_algorithm(cfg: ExperimentConfig, num_clients: int | None = None) -> Algorithm:
    """Build the algorithm object a config names (``num_clients`` = N, for SCAFFOLD's control variate)."""
    hp = algorithm_hyperparameters(cfg)
    a = cfg.algorithm
    if a.name == "scaffold" and num_clients:
        hp["num_clients"] = num_clients
    return build(a.name, a.client_fraction, **hp)


@functools.lru_cache(maxsize=4)
def _dataset(name: str, path: str | None) -> Dataset:
    return load_dataset(name, path)


@dataclass(frozen=True)
class Prepared:
    """A config resolved into the objects a run needs."""

    config: ExperimentConfig
    data: FederatedDataset
    model_factory: Callable[[], nn.Module]
    algorithm: Algorithm
    pipeline: PipelineSpec | None = None  # [compression] / [privacy], resolved
    task: Task | None = None  # the task (built-in or the user's) whose model, loss and metrics run

    def simulator(self, *, eval_every: int | None = None, aggregator=None, attack=None) -> Simulator:
        """Return the run's simulator (the lab's: evaluating every ``eval_every`` rounds, with its
        defence as ``aggregator`` and its ``attack``)."""
        run = self.config.run
        sim_cfg = SimulationConfig(
            rounds=run.rounds,
            eval_every=run.eval_every if eval_every is None else eval_every,
            seed=run.seed,
            batched=run.batched,
            workers=run.workers,
            backend=run.backend,
            target_accuracy=run.target_accuracy,
            stop_at_target=run.stop_at_target,
            heterogeneity=heterogeneity(self.config.heterogeneity),
        )
        return Simulator(
            seeded(self.model_factory, run.seed),
            self.data,
            self.algorithm,
            sim_cfg,
            aggregator=aggregator,
            attack=attack,
            pipeline=self.pipeline,
            task=self.task,
            example_ledger=example_ledger(self.config),
            finetune=self.config.personalization is not None and self.config.personalization.method == "finetune",
        )


def resolve_task(cfg: ExperimentConfig) -> tuple[Task, Dataset]:
    """Return the config's task and its data set: the user's ``[task] entry`` and its ``data()``, or the
    built-in task ``[model] name`` on ``[data] dataset``.

    Raises:
        ConfigError, DataError: the task does not import or is incomplete, its data does not load or
            does not match its schema, or the model does not fit the data.
    """
    if user_task(cfg):
        t = cfg.task
        task = load_task(t.entry, t.kwargs, t.path)
        return task, task_dataset(task)
    dataset = _dataset(cfg.data.dataset, cfg.data.path)
    return builtin_task(cfg.model.name, dataset), dataset


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Load and split the data, check the model fits it, build the algorithm. Writes nothing."""
    d = cfg.data
    task, dataset = resolve_task(cfg)
    fed = federate(
        dataset,
        d.partition,
        d.num_clients,
        cfg.run.seed,
        shards_per_client=d.shards_per_client,
        alpha=d.alpha,
        sigma=d.sigma,
    )
    if cfg.personalization is not None:  # each client's own examples to score its models on
        fed = fed.with_holdout(cfg.personalization.holdout, cfg.run.seed)
    spec = pipeline_spec(cfg, fed.num_clients) if uses_pipeline(cfg) else None
    algorithm = build_algorithm(cfg, fed.num_clients)
    if user_task(cfg):  # the user's model builds and takes two training examples, or one line says why
        model = check_model(task, call_user(f"task {task.task_name}: model()", task.model))
        _check_fits(task, model, fed.dataset)
    else:
        model = task.model()
    check_buffers(algorithm, model)  # running statistics: refused under DP and where a server half would step them
    if algorithm.personalization is not None:  # FedPer's layers exist in the model
        algorithm.personalization.check([n for n, _ in model.named_parameters()])
    if spec is not None:
        spec.check_model(model)
    return Prepared(cfg, fed, task.model, algorithm, spec, task)


def _check_fits(task: Task, model: torch.nn.Module, dataset: Dataset) -> None:
    """One forward pass, loss and metrics on two training examples: a model that does not fit the data,
    or a loss or metrics of the wrong kind, stops here, named, instead of in round 1."""
    x, y = dataset.train.x[:2], targets(dataset.train.y[:2], dataset.ignore_index)
    if len(x):
        what = f"task {task.task_name}: its model on two training examples"
        output = call_user(what, lambda: model(x))
        check_output(task, output, y)
        loss = check_loss(task, call_user(what, lambda: task.loss(output, y)))
        check_finite_loss(task, loss)
        if isinstance(task, ClassificationTask) and isinstance(output, torch.Tensor) and output.ndim:
            check_label_range(task, int(output.shape[-1]), dataset)
        with torch.no_grad():
            check_metrics(
                task, call_user(f"task {task.task_name}: metrics()", lambda: task.metrics(output.detach(), y))
            )


def uses_pipeline(cfg: ExperimentConfig) -> bool:
    """Return True when ``cfg`` configures a client-update pipeline (compression, DP, SecAgg or HE).

    A run without one never imports the pipeline's modules (nor dp_accounting, tenseal or phe).
    """
    return any(
        x is not None for x in (cfg.compression, cfg.privacy, cfg.secure_aggregation, cfg.homomorphic_encryption)
    )


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    prepared: Prepared | None = None,
    *,
    plot: bool = True,
    resume: bool = False,
) -> dict:
    """Run ``cfg``; write ``metrics.jsonl``, ``summary.json``, ``curve.png`` and the final model
    (``model.safetensors``, ``manifest.json``) to ``out_dir``; return the summary.

    Args:
        cfg: the validated config.
        out_dir: where to write the results (None: write nothing).
        on_round: called with each evaluated round's record.
        prepared: ``prepare(cfg)``'s result when the caller already has it.
        plot: write ``curve.png`` (False: matplotlib is never imported).
        resume: go on from ``out_dir``'s checkpoint (written every ``run.checkpoint_every`` rounds): the
            rounds after it run exactly as in an uninterrupted run; ``run.rounds`` may be raised.

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        ConfigError, DataError: a bad config or data file, before anything is written.
    """
    prep = prepared or prepare(cfg)
    sim = prep.simulator()
    out = Path(out_dir) if out_dir is not None else None
    where = Resumed()  # the first round to run; the rows of the rounds a resumed run already has
    if resume:
        if out is None:
            raise ConfigError("resume: expected the run's output folder")
        where = resume_from(sim, out, cfg)
    before = where.rows
    metrics_file = None
    tracking = Tracking(cfg.tracking if out is not None else None, out, cfg.to_dict())  # a missing extra stops here
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "failed.json").unlink(missing_ok=True)  # a rerun in the same folder is not shown as failed
        if not resume:  # a run started anew is never resumed from the checkpoint of the run it replaces
            remove_checkpoint(out)
        write_rows(out / "metrics.jsonl", [record_line(row) for row in before])
        metrics_file = open(out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in finally)

    def record(rec: RoundRecord) -> None:
        row = rec.to_dict()
        if metrics_file is not None:
            metrics_file.write(record_line(row) + "\n")
            metrics_file.flush()
        tracking.log_round(row)
        if on_round is not None:
            on_round(rec)

    checkpoint = None if out is None or resume_problem(sim) is not None else Checkpoints(sim, out, cfg)
    start = time.perf_counter()
    try:  # killed after its last checkpoint: only the final files are left to write
        result = (
            SimulationResult(sim.params)
            if where.done
            else sim.run(record, start_round=where.first, after_round=checkpoint)
        )
        if checkpoint is not None:
            checkpoint.finish()
    except BaseException as e:  # the dashboard shows the run as failed, with its error
        tracking.close("FAILED")
        if out is not None:
            write_failure(out, e)
        raise
    finally:
        if metrics_file is not None:
            metrics_file.close()
    wall = time.perf_counter() - start
    hist = [*(_record_of(row) for row in before), *result.history]
    rounds, accs = [h.round for h in hist], [h.test_accuracy for h in hist]
    target = cfg.run.target_accuracy
    summary = {
        "config": cfg.to_dict(),
        "num_parameters": num_parameters(result.params),
        "num_clients": prep.data.num_clients,
        "clients_per_round": sim.cohort,
        "partition": describe(prep.data),
        "batched": sim.batched,
        "workers": sim.workers,
        "rounds_run": rounds[-1] if rounds else 0,
        **accuracy_summary(hist, target),
        "final_loss": hist[-1].test_loss if hist else None,
        "wall_s": round(wall, 3),
        "seconds_per_round": round(wall / max(rounds[-1] if rounds else 1, 1), 4),
        **_pipeline_summary(sim, result),
        "updates_refused": sim.refused,  # NaN/inf or malformed client updates, never aggregated
        "rounds_skipped": sim.skipped_rounds,  # too few reports for the robust aggregator: the model kept
        "rounds_refused": sim.refused_aggregates,  # a new model that was not finite: the model kept
        **{  # the task's own metrics (final_auc, final_mse, ...) and personalized FL's
            f"final_{k.removeprefix('test_')}": v
            for k, v in (hist[-1].extra.items() if hist else ())
            if k.startswith(("test_", "local_", "personal_"))
        },
        "versions": {"hamrah": hamrah.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    tracking.close("FINISHED")
    if tracking.failures:  # sinks that failed mid-run and were dropped (the run carried on): sink -> cause
        summary["tracking_failed"] = dict(tracking.failures)
    if out is not None:
        final = {"accuracy": summary["final_accuracy"], "loss": summary["final_loss"]}
        final.update({k[5:]: v for k, v in (hist[-1].extra.items() if hist else ()) if k.startswith("test_")})
        schema = prep.data.dataset.info.get("schema")
        write_model(out, sim.model, result.params, prep.task, cfg.to_dict(), final, schema)
        write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if out is not None and plot:
        what = f"task {prep.task.task_name}" if user_task(cfg) else f"{cfg.model.name} on {cfg.data.dataset}"
        title = f"{cfg.algorithm.name} / {what} ({cfg.data.partition})"
        scored = any(a is not None for a in accs)  # else a task without accuracy (regression): its test loss
        values = accs if scored else [h.test_loss for h in hist]
        plot_curves(
            {f"lr={cfg.algorithm.lr:g}": (rounds, values)},
            out / "curve.png",
            title=title,
            target=target if scored else None,
            ylabel="test accuracy" if scored else "test loss",
        )
    return summary


def _record_of(row: dict) -> RoundRecord:
    """A metric row of the rounds before a resume, as a record (for the summary)."""
    return RoundRecord(
        row["round"], row.get("test_accuracy"), row.get("test_loss"), row.get("train_loss", float("nan"))
    )


def _pipeline_summary(sim: Simulator, result) -> dict:
    """Return the pipeline's totals for the summary: bytes each way, epsilon spent (DP-SGD: the largest
    any client spent, ``privacy_unit = "example"``), an early stop."""
    out: dict = {}
    if sim.pipeline is not None:
        out.update(
            pipeline=list(sim.pipeline.chain.names),
            bytes_up_total=sim.bytes_total[0],
            bytes_down_total=sim.bytes_total[1],
        )
        if sim.pipeline.accountant is not None:
            out.update(
                epsilon=sim.pipeline.epsilon(),
                delta=sim.pipeline.delta,
                noise_multiplier=sim.pipeline.spec.noise_multiplier,
            )
    if sim.examples is not None:
        dp = sim.algorithm.local_plan().example_dp
        out.update(
            epsilon=sim.examples.worst(),
            delta=sim.examples.delta,
            noise_multiplier=dp.noise_multiplier if dp is not None else None,
            privacy_unit="example",
        )
    if result.stopped:
        out["stopped"] = result.stopped
    return out
