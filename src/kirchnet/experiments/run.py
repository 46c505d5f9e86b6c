"""One training run from a :class:`~kirchnet.config.TrainConfig`: build, train, report.

:func:`run_training` is the unit of work of ``kirchnet train`` and of sweeps: it builds
the network, task, circuit, rule, optimizer, constraints and tunable mask from the
config, trains, and returns a flat dict of final metrics. With ``out_dir`` it also
writes ``config.json``, ``metrics.json``, ``history.json``/``.csv``,
``conductances.csv`` (edge, tail, head, g, r, tunable, mean |current|),
``network.graphml`` (the network with its final conductances; reads back with
``Network.from_networkx(nx.read_graphml(path))``), the :mod:`kirchnet.persist` save
(``kirchnet.json``, ``conductances.npy``, ``config.toml``: ``kirchnet.load_run(out_dir)``),
``learning_curve.png`` and ``network.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import topologies
from ..circuit import Circuit
from ..config import ConfigError, TrainConfig
from ..network import Network
from ..rules import Analytical, Rule
from ..tasks import Task, make_task
from . import io
from .._interrupt import reraises_ctrl_c

CHECKPOINT_SUBDIR = "checkpoint"

__all__ = ["run_training", "build_network", "build_task", "build_rule", "build_optimizer",
           "build_constraints", "build_mask", "fit", "FitResult"]


# ------------------------------------------------------------------ builders
def build_network(cfg, seed: int) -> Network:
    """The topology described by a :class:`~kirchnet.config.NetworkConfig`."""
    s = cfg.seed if cfg.seed is not None else seed
    if cfg.kind == "lattice":
        return topologies.lattice(cfg.rows, cfg.cols, diagonals=cfg.diagonals)
    if cfg.kind == "delaunay":
        return topologies.delaunay(cfg.n, seed=s)
    if cfg.kind == "random":
        return topologies.random_connected(cfg.n, m=cfg.m, mean_degree=cfg.mean_degree, seed=s)
    if cfg.kind == "regular":
        return topologies.random_regular(cfg.n, cfg.degree, seed=s)
    if cfg.kind == "layered":
        return topologies.layered(cfg.sizes)
    if cfg.kind == "complete":
        return topologies.complete(cfg.n)
    raise ConfigError(f"unknown network kind {cfg.kind!r}")


def build_task(cfg, network: Network | None, seed: int) -> Task:
    from ..config import NONLINEAR
    from ..tasks import NONLINEAR_TASKS, mnist

    if cfg.name in NONLINEAR:
        return (mnist if cfg.name == "mnist" else NONLINEAR_TASKS[cfg.name])(**cfg.kwargs(seed))
    return make_task(cfg.name, network=network, **cfg.kwargs(seed))


def setup_drn(config: TrainConfig):
    """``(network, task, circuit, g0)`` of a ``network.kind = "drn"`` config: the DRN
    ``(n_features, *hidden, n_outputs)`` of :func:`kirchnet.drn.deep_resistive_circuit` (seeded
    by the run seed), its initial conductances (diodes at scale 1), and the task with its
    inputs mapped to the circuit's (``drn.circuit_inputs``)."""
    import dataclasses

    from ..drn import deep_resistive_circuit
    from ..errors import KirchnetError

    nc = config.network
    try:
        task = build_task(config.task, None, config.seed)
        drn, circuit, g0 = deep_resistive_circuit(
            (task.x_train.shape[1], *nc.hidden, task.n_outputs), seed=config.seed if nc.seed is None else nc.seed,
            backend=nc.backend, gain=nc.gain, diode_split=nc.diode_split, diode_bias=nc.diode_bias, bias=nc.bias,
            g_min=config.constraints.g_min or 1e-6)
    except (KirchnetError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"network / task: cannot build the DRN (network.hidden, network.gain, ...) for task "
                          f"{config.task.name!r}: {exc}") from None
    task = dataclasses.replace(task, x_train=drn.circuit_inputs(task.x_train), x_test=drn.circuit_inputs(task.x_test),
                               info={**task.info, "drn": {"layers": list(drn.spec.layers), "gain": nc.gain}})
    return circuit.network, task, circuit, g0


def build_rule(cfg, loss="mse", seed: int = 0) -> Rule:
    """A rule instance from a :class:`~kirchnet.config.RuleConfig` (``loss``: name or Loss); the
    estimators build ``rule="ep"`` (or a ``[rule]`` table as a dict) through this function too."""
    from .. import defaults as D
    from .. import rules

    name = cfg.name
    if name == "analytical":
        return Analytical(loss=loss)
    if name == "ep":
        return rules.EquilibriumPropagation(cfg.beta, variant=cfg.variant or D.EP_VARIANT, nudge=cfg.nudge, loss=loss)
    if name == "gep":
        return rules.GEP(nudge=cfg.nudge, beta=cfg.beta, variant=cfg.variant or D.EP_VARIANT, loss=loss)
    if name == "cl":
        return rules.CoupledLearning(cfg.eta, variant=cfg.variant or D.CL_VARIANT, loss=loss)
    if name == "acl":
        return rules.AdjointCoupledLearning(cfg.eta, variant=cfg.variant or D.CL_VARIANT, loss=loss)
    if name == "finite_difference":
        return rules.FiniteDifference(cfg.eps, loss=loss)
    if name == "insitu":
        return make_insitu(loss=loss, noise=cfg.noise, noise_abs=cfg.noise_abs, adc_bits=cfg.adc_bits,
                           seed=seed, mode=cfg.mode)
    raise ConfigError(f"unknown rule {name!r}")


def make_insitu(loss="mse", noise: float = 0.0, noise_abs: float = 0.0, adc_bits=None, seed: int = 0,
                mode: str = "sequential") -> Rule:
    """The in-situ protocol (:class:`kirchnet.rules.InSitu`): relative noise ``noise`` and
    absolute noise ``noise_abs`` on every measured edge current and output voltage."""
    from ..rules import InSitu

    return InSitu(loss=loss, current_noise=noise, current_noise_abs=noise_abs, output_noise=noise,
                  output_noise_abs=noise_abs, adc_bits=adc_bits, mode=mode, seed=seed)


def build_optimizer(cfg):
    from .. import optim

    if cfg.name == "sgd":
        return optim.SGD(cfg.lr)
    if cfg.name == "momentum":
        return optim.Momentum(cfg.lr, cfg.momentum)
    return optim.Adam(cfg.lr)


def build_schedule(cfg, epochs: int):
    from .. import optim

    if cfg.schedule == "constant":
        return optim.Constant()
    if cfg.schedule == "step":
        return optim.StepDecay(cfg.step_size, cfg.decay)
    if cfg.schedule == "exponential":
        return optim.ExponentialDecay(cfg.decay)
    return optim.Cosine(epochs)


def build_constraints(cfg, seed: int = 0) -> list:
    """Constraint list in application order: update noise, bounds, levels (conductance space)."""
    from .. import constraints as C

    out = []
    if cfg.update_noise > 0:
        out.append(C.UpdateNoise(cfg.update_noise, seed=seed + 7, space="conductance"))
    if cfg.g_min is not None or cfg.g_max is not None:
        out.append(C.Bounds(cfg.g_min, cfg.g_max, space="conductance"))
    if cfg.levels is not None:
        out.append(C.Levels(np.geomspace(cfg.g_min, cfg.g_max, cfg.levels), space="conductance", log=True,
                            rounding=cfg.rounding, seed=seed + 11))
    return out


def build_mask(cfg, circuit: Circuit, seed: int = 0) -> np.ndarray:
    """Tunable mask (m,): all, a random fraction, or the fraction of edges nearest the
    inputs / outputs (edges ranked by hop distance ``d(e) = min(d(a), d(b))``, ties by a
    seeded random order)."""
    from .. import partial

    m = circuit.network.n_edges
    if cfg.mode == "all" or cfg.fraction >= 1.0:
        return np.ones(m, dtype=bool)
    k = max(1, int(round(cfg.fraction * m)))
    if cfg.mode == "random":
        return partial.random_mask(m, cfg.fraction, seed=seed)
    d = np.asarray(partial.edge_distances(circuit, cfg.mode), dtype=float)
    tie = np.random.default_rng(seed).random(m)
    mask = np.zeros(m, dtype=bool)
    mask[np.lexsort((tie, d))[:k]] = True
    return mask


# ------------------------------------------------------------------ training
@dataclass
class FitResult:
    conductances: np.ndarray
    history: list[dict]
    wall_time: float


@reraises_ctrl_c
def fit(task: Task, circuit: Circuit, rule: Rule, g0, epochs: int, optimizer, *, schedule=None,
        constraints=(), mask=None, batch_size: int | None = None, seed: int = 0,
        parametrization: str = "conductance", eval_every: int = 1,
        callback: Callable[[int, dict], None] | None = None, checkpoint_dir=None,
        checkpoint_every: int = 0, resume: bool = False, fingerprint: dict | None = None) -> FitResult:
    """Train with :class:`kirchnet.training.Trainer` and return a history in task terms.

    One step: factorize (or low-rank update) once, ``est = rule.estimate(...)``, optimizer
    step on the tunable edges (``mask``), then ``constraints``. History rows hold
    ``epoch, train_loss, test_loss`` (+ accuracies for classification, with the task's
    decision rule) and the cumulative wall ``time``; ``eval_every`` thins the rows.
    ``checkpoint_dir`` with ``checkpoint_every > 0``: Trainer checkpoints (the rows are part
    of them); ``resume``: continue from the checkpoint there (refused with a
    :class:`~kirchnet.training.CheckpointError` if it belongs to another run, see
    ``fingerprint``), giving the same conductances and rows as an uninterrupted run
    (the wall ``time`` column aside).
    """
    from ..training import Callback, Trainer

    t0 = time.perf_counter()
    n = task.x_train.shape[0]
    rows: list[dict] = []

    def record(epoch, g):
        row = {"epoch": epoch, **task.evaluate(circuit, g), "time": time.perf_counter() - t0}
        rows.append(row)
        if callback is not None:
            callback(epoch, row)

    class _Recorder(Callback):
        def on_epoch_end(self, trainer, epoch, rec):
            if epoch % eval_every == 0 or epoch == epochs:
                record(epoch, self.g)

        def on_step_end(self, trainer, info):
            self.g = info["conductances"]

        def state_dict(self) -> dict:  # checkpointed with the trainer: the rows so far
            return {"rows": [{k: _plain(v) for k, v in r.items()} for r in rows],
                    "elapsed": time.perf_counter() - t0}

        def load_state_dict(self, state: dict) -> None:
            nonlocal t0
            rows[:] = [dict(r) for r in state["rows"]]
            t0 = time.perf_counter() - float(state["elapsed"])

    rec = _Recorder()
    every = int(checkpoint_every or 0)
    trainer = Trainer(rule, optimizer, epochs=epochs, batch_size=n if batch_size is None else min(batch_size, n),
                      seed=seed, schedule=schedule, tunable=mask, constraints=list(constraints) or None,
                      parametrization=parametrization, accuracy=False, callbacks=[rec],
                      checkpoint_dir=None if checkpoint_dir is None or every < 1 else str(checkpoint_dir),
                      checkpoint_every=max(every, 1), fingerprint=fingerprint)
    record(0, np.asarray(g0, dtype=float))
    res = trainer.fit(circuit, g0, task.x_train, task.y_train, resume=resume and trainer.checkpoint_dir is not None)
    return FitResult(np.asarray(res.conductances), rows, time.perf_counter() - t0)


def _plain(v):
    """JSON-exact Python scalars (a float's repr round-trips bit for bit)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return v


def setup(config: TrainConfig):
    """Build ``(network, task, circuit, g0, rule, mask)`` for a config (deterministic by seed).

    A config that passes the schema but cannot be built (a topology that does not exist, a
    network with fewer nodes than the task has terminals) raises :class:`ConfigError`
    naming the keys to change."""
    from ..errors import KirchnetError

    seed = config.seed
    nc = config.network
    if nc.kind == "drn":
        net, task, circuit, g0 = setup_drn(config)
        rule = build_rule(config.rule, loss=task.loss, seed=seed)
        trainable = np.zeros(net.n_edges, dtype=bool)
        trainable[:net.n_edges - sum(nc.hidden)] = True    # the last edges are the hidden nodes' diodes
        mask = build_mask(config.tunable, circuit, seed=seed + 2) & trainable   # never the diodes
        return net, task, circuit, g0, rule, mask
    try:
        net = build_network(nc, seed)
    except (KirchnetError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        keys = {"lattice": "network.rows, network.cols", "layered": "network.sizes",
                "random": "network.n, network.m / network.mean_degree",
                "regular": "network.n, network.degree"}.get(nc.kind, "network.n")
        raise ConfigError(f"network: cannot build a {nc.kind!r} network ({keys}): {exc}") from None
    try:
        task = build_task(config.task, net, seed)
        circuit = task.circuit(net, backend=config.network.backend)
    except (KirchnetError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        size = {"lattice": "network.rows / network.cols", "layered": "network.sizes"}.get(nc.kind, "network.n")
        raise ConfigError(f"network / task: task {config.task.name!r} does not fit a {nc.kind!r} network with "
                          f"{net.n_nodes} nodes: {exc} (make the network larger with {size}, or the task "
                          f"smaller, e.g. task.n_inputs / task.n_outputs)") from None
    lo, hi = config.network.g_init
    g0 = np.random.default_rng(seed + 1).uniform(lo, hi, net.n_edges)
    rule = build_rule(config.rule, loss=task.loss, seed=seed)
    mask = build_mask(config.tunable, circuit, seed=seed + 2)
    return net, task, circuit, g0, rule, mask


def config_fingerprint(config: TrainConfig) -> str:
    """SHA-256 (16 hex digits) of the config's canonical JSON, ``checkpoint_every`` left out."""
    import hashlib
    import json

    data = {k: v for k, v in config.to_dict().items() if k != "checkpoint_every"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def train(config: TrainConfig | dict, callback: Callable[[int, dict], None] | None = None,
          checkpoint_dir=None, resume: bool = False):
    """Build and train; return ``(metrics, FitResult, parts)`` with ``parts`` holding the
    network, task, circuit and tunable mask (see :func:`run_training` for ``metrics``).
    ``checkpoint_dir``: checkpoints every ``config.checkpoint_interval()`` epochs, fingerprinted
    with the config (:func:`config_fingerprint`); ``resume``: continue from them."""
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    net, task, circuit, g0, rule, mask = setup(config)
    optimizer = build_optimizer(config.optimizer)
    schedule = build_schedule(config.optimizer, config.epochs)
    cons = build_constraints(config.constraints, seed=config.seed)
    if config.device is not None:  # programming pulses through the devices, after the other constraints
        cons.append(config.device.build(config.seed))
    res = fit(task, circuit, rule, g0, config.epochs, optimizer, schedule=schedule, constraints=cons,
              mask=mask, batch_size=config.batch_size, seed=config.seed,
              parametrization=config.parametrization, eval_every=config.eval_every, callback=callback,
              checkpoint_dir=checkpoint_dir, checkpoint_every=config.checkpoint_interval(), resume=resume,
              fingerprint={"config": config_fingerprint(config)})
    final = res.history[-1]
    metrics = {
        "name": config.name, "task": config.task.name, "rule": config.rule.name,
        "network": config.network.kind, "n_nodes": net.n_nodes, "n_edges": net.n_edges,
        "n_tunable": int(mask.sum()), "epochs": config.epochs, "seed": config.seed,
        **{k: v for k, v in final.items() if k not in ("epoch", "time")},
        "initial_train_loss": res.history[0]["train_loss"],
        "loss_reduction": res.history[0]["train_loss"] / max(final["train_loss"], 1e-300),
        "wall_time": res.wall_time,
    }
    return metrics, res, {"network": net, "task": task, "circuit": circuit, "mask": mask, "config": config}


@reraises_ctrl_c
def run_training(config: TrainConfig | dict, out_dir: Path | None = None, progress: bool = False,
                 resume: bool = False, checkpoint: bool | None = None) -> dict:
    """Run one training described by ``config``; return a flat dict of final metrics.

    Keys: ``name, task, rule, network, n_nodes, n_edges, n_tunable, epochs, seed,
    train_loss, test_loss`` (+ ``train_accuracy, test_accuracy`` for classification),
    ``initial_train_loss, loss_reduction`` (initial / final train loss), ``wall_time`` (s).
    With ``out_dir``: history, conductances, metrics and figures are written there, and
    (``checkpoint``, default on with ``out_dir``) checkpoints go to ``out_dir/checkpoint``
    every ``config.checkpoint_interval()`` epochs; ``resume=True`` continues from them.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    bar = cb = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        tid = bar.add_task(f"training {config.name}", total=config.epochs)

        def cb(epoch, row):
            bar.update(tid, completed=epoch, description=f"{config.name} loss={row['train_loss']:.3g}")
    if checkpoint is None:
        checkpoint = out_dir is not None
    ckpt = Path(out_dir) / CHECKPOINT_SUBDIR if (checkpoint and out_dir is not None) else None
    try:
        metrics, res, parts = train(config, callback=cb, checkpoint_dir=ckpt, resume=resume)
    finally:
        if bar is not None:
            bar.stop()
    if out_dir is not None:
        write_run_outputs(Path(out_dir), config, parts["task"], parts["circuit"], res, parts["mask"], metrics)
    return metrics


def write_run_outputs(out: Path, config: TrainConfig, task: Task, circuit: Circuit, res: FitResult,
                      mask: np.ndarray, metrics: dict) -> None:
    from .. import plotting

    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / "config.json", config.to_dict())
    io.write_json(out / "metrics.json", metrics)
    io.write_json(out / "history.json", res.history)
    io.write_csv(out / "history.csv", res.history)
    g = res.conductances
    state = circuit.factorize(g).solve(task.x_train)
    cur = np.abs(state.currents).mean(axis=0)
    net = circuit.network
    h = res.history
    ep = [r["epoch"] for r in h]
    curves = {"train": (ep, [r["train_loss"] for r in h])}
    if "test_loss" in h[0]:
        curves["test"] = (ep, [r["test_loss"] for r in h])
    io.save_figure(plotting.learning_curves(curves, ylabel=plotting.loss_label(task.loss),
                                            title=f"{config.name}: {config.rule.name} on {config.task.name}"),
                   out / "learning_curve.png")
    if "train_accuracy" in h[0]:
        acc = {"train": (ep, [r["train_accuracy"] for r in h])}
        if "test_accuracy" in h[0]:
            acc["test"] = (ep, [r["test_accuracy"] for r in h])
        io.save_figure(plotting.learning_curves(acc, ylabel="accuracy", logy=False), out / "accuracy_curve.png")
    io.save_figure(plotting.draw_network(net, g, state.currents, circuit=circuit, tunable=mask),
                   out / "network.png")
    net.write_graphml(out / "network.graphml", g, resistance=1.0 / g, tunable=np.asarray(mask, dtype=bool))
    from ..persist import save

    # kirchnet.json, conductances.npy and conductances.csv (edge, tail, head, g, r, tunable,
    # mean |current|), config.toml: the run loads back with kirchnet.load_run(out)
    save(out, circuit, g, config=config, history=res.history, metadata={"metrics": metrics},
         tunable=mask, edge_data={"mean_abs_current": cur})
