"""Save and load a (trained) circuit: an open, documented, versioned format.

:func:`save` writes a directory (or, for a path ending in ``.zip``, a zip archive with
the same files)::

    kirchnet.json       format name and version, network, boundary roles, element laws,
                        metadata (and the training config as JSON, when given)
    conductances.npy    the conductances g (m,) in siemens, float64 (authoritative)
    conductances.csv    the same, human readable: edge, tail, head, conductance, resistance
                        [, tunable]  (floats written with repr, so they parse back exactly)
    config.toml         optional: the training config (readable by ``kirchnet train``)
    history.json        optional: the training history (a list of per-epoch records)

``kirchnet.json`` (format ``"kirchnet-circuit"``, version :data:`FORMAT_VERSION` = 1)::

    {"format": "kirchnet-circuit", "version": 1, "kirchnet_version": "0.1.0",
     "network": {"n_nodes": n, "edges": [[a, b], ...]   (edge e = a -> b, in edge order),
                 "labels": null | [label, ...],          (original node labels; ints stay
                                                          ints, strings strings; other
                                                          types as {"literal": repr})
                 "positions": null | [[x, y], ...]},
     "circuit": {"ground": id,
                 "inputs":  [{"node": id} | {"edge": e}, ...],    (column order of x)
                 "outputs": [{"node": id} | {"edge": e} | {"pair": [a, b]}, ...],
                 "clamped": [id, ...], "backend": "auto",
                 "current_terminals": []},   (injected currents J are a solve argument;
                                              no node is reserved for them today)
     "elements": [{"law": {"kind": "diode", ...}, "edges": [e, ...]}, ...],
     "conductances": {"file": "conductances.npy", "csv": "conductances.csv", "n_edges": m,
                      "unit": "S"},
     "tunable": null | [bool, ...],
     "config": null | {...},   "history": null | "history.json",
     "layered": null | {"kind": "drn", "spec": {...}},   (optional: a circuit built by
                                              DRN.to_circuit, solved by the exact layered
                                              solver; the spec's DRNSpec fields)
     "metadata": {...}}

Node ids in ``circuit`` are the internal ids ``0 .. n-1`` (the position of the node in
``labels``). ``elements`` lists the element laws other than the linear resistor
(``i = g v``) with their edges (:meth:`kirchnet.elements.ElementMap.to_dict`: each law as
``{"kind": name, **parameters}``); edges not listed are resistors, so ``[]`` is a linear
network. A file naming an unknown law, or of a format version other than 1, is refused
with :class:`~kirchnet.errors.FormatError`. The circuit rebuilt by
:func:`load` has the same network, terminal order and backend, so ``solve`` with the
loaded conductances reproduces the saved run exactly (bit for bit on the same machine).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .circuit import Circuit, Edge, Pair
from .elements import LAWS, ElementMap
from .errors import ConfigError, FormatError
from .network import Network

__all__ = ["save", "load", "load_run", "Saved", "FORMAT", "FORMAT_VERSION", "to_toml"]

FORMAT = "kirchnet-circuit"
FORMAT_VERSION = 1
INDEX = "kirchnet.json"


@dataclass
class Saved:
    """What :func:`load` returns: the circuit, its conductances (m,), the training config
    (a :class:`~kirchnet.config.TrainConfig`, or the raw dict if it no longer validates, or
    None), the history (list of records or None), the metadata dict and the tunable mask."""

    circuit: Circuit
    conductances: np.ndarray
    config: Any = None
    history: list | None = None
    metadata: dict = field(default_factory=dict)
    tunable: np.ndarray | None = None

    @property
    def network(self) -> Network:
        return self.circuit.network

    def task(self):
        """The task of the saved training config, rebuilt on the saved network (deterministic
        by the config's seed), e.g. ``saved.task().evaluate(saved.circuit, saved.conductances)``."""
        from .config import TrainConfig
        from .experiments.run import build_task

        if not isinstance(self.config, TrainConfig):
            raise ConfigError("this save holds no (valid) training config, so its task cannot be rebuilt; "
                              "pass config= to kirchnet.save")
        return build_task(self.config.task, self.circuit.network, self.config.seed)


# ----------------------------------------------------------------------------- encoding
def _encode_label(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and np.isfinite(v):
        return float(v)
    if isinstance(v, str):
        return v
    text = repr(v)
    try:
        if ast.literal_eval(text) == v:
            return {"literal": text}
    except (ValueError, SyntaxError):
        pass
    raise FormatError(f"node label {v!r} ({type(v).__name__}) cannot be saved: labels must be ints, "
                      f"strings, finite floats, bools or Python literals (tuples of those); relabel the "
                      f"nodes (e.g. networkx.convert_node_labels_to_integers)")


def _decode_label(v):
    if isinstance(v, dict):
        if set(v) != {"literal"}:
            raise FormatError(f"network.labels: unknown label encoding {v!r} (expected {{'literal': repr}})")
        return ast.literal_eval(v["literal"])
    return v


def _encode_circuit(circuit: Circuit) -> dict:
    net = circuit.network
    inputs: list[dict | None] = [None] * circuit.n_inputs
    for j, v in zip(circuit._node_cols, circuit.input_nodes):
        inputs[int(j)] = {"node": int(v)}
    for j, e in zip(circuit._edge_cols, circuit.source_edges):
        inputs[int(j)] = {"edge": int(e)}
    outputs = []
    for item in circuit.output_specs:
        if isinstance(item, Edge):
            outputs.append({"edge": int(item.index)})
        elif isinstance(item, Pair):
            outputs.append({"pair": [net.node_index(item.a), net.node_index(item.b)]})
        else:
            outputs.append({"node": net.node_index(item)})
    return {"ground": int(circuit.ground), "inputs": inputs, "outputs": outputs,
            "clamped": [int(v) for v in circuit.clamped_nodes], "backend": circuit.backend,
            "current_terminals": []}


def _encode_layered(circuit: Circuit) -> dict | None:
    """``{"kind": "drn", "spec": {...}}`` for a circuit built by ``DRN.to_circuit`` (so
    that the loaded circuit is solved by the same exact layered solver), else ``None``."""
    from dataclasses import asdict

    from .drn import layered_spec

    spec = layered_spec(circuit)
    if spec is None:
        return None
    d = asdict(spec)
    d["layers"] = [int(n) for n in spec.layers]
    return {"kind": "drn", "spec": d}


def _decode_layered(circuit: Circuit, item, path) -> None:
    """Register a loaded circuit for the layered solver when ``kirchnet.json`` says it is a
    DRN, after checking that the spec rebuilds exactly the saved network and terminals."""
    if item is None:
        return
    from .drn import DRN, DRNSpec, mark_layered
    from .errors import KirchnetError

    try:
        if not isinstance(item, dict) or item.get("kind") != "drn":
            raise FormatError(f"unknown layered kind {item!r}")
        spec = DRNSpec(**{**item["spec"], "layers": tuple(item["spec"]["layers"])})
        ref, _ = DRN(spec).to_circuit(backend=circuit.backend)
    except (KirchnetError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: {INDEX}: invalid 'layered' entry: {exc}") from exc
    same = (ref.network.n_nodes == circuit.network.n_nodes
            and np.array_equal(ref.network.edges, circuit.network.edges)
            and _encode_circuit(ref) == _encode_circuit(circuit)
            and ref.elements.to_dict() == circuit.elements.to_dict())
    if not same:
        raise FormatError(f"{path}: {INDEX}: the 'layered' DRN spec {spec} does not describe the "
                          "saved network and terminals; remove the 'layered' entry to load it as "
                          "a general circuit")
    mark_layered(circuit, spec)


def _decode_elements(net: Network, items: list, path) -> ElementMap:
    """The :class:`~kirchnet.elements.ElementMap` of ``kirchnet.json``'s ``elements`` list."""
    from .errors import KirchnetError

    try:
        if not isinstance(items, list) or not all(isinstance(i, dict) and "law" in i and "edges" in i
                                                  for i in items):
            raise FormatError(f"expected a list of {{'law': {{'kind': ...}}, 'edges': [...]}}, got {items!r:.200}")
        return ElementMap.from_dict({"n_edges": net.n_edges, "elements": items})
    except (KirchnetError, TypeError) as exc:
        raise FormatError(f"{path}/{INDEX}: elements: {exc} (known laws: {', '.join(sorted(LAWS))})") from None


def _decode_circuit(net: Network, spec: dict, elements: ElementMap) -> Circuit:
    lab = net.labels
    node = (lambda i: lab[int(i)]) if lab is not None else (lambda i: int(i))

    def one(item, role):
        if not isinstance(item, dict) or len(item) != 1:
            raise FormatError(f"circuit.{role}: each entry must be one of {{'node': id}}, {{'edge': e}}"
                              f"{', {pair: [a, b]}' if role == 'outputs' else ''}; got {item!r}")
        (kind, val), = item.items()
        if kind == "node":
            return node(val)
        if kind == "edge":
            return Edge(int(val))
        if kind == "pair" and role == "outputs":
            return Pair(node(val[0]), node(val[1]))
        raise FormatError(f"circuit.{role}: unknown terminal kind {kind!r}")

    try:
        return Circuit(net, ground=node(spec["ground"]),
                       inputs=[one(i, "inputs") for i in spec.get("inputs", [])],
                       outputs=[one(o, "outputs") for o in spec.get("outputs", [])],
                       clamped=[node(v) for v in spec.get("clamped", [])],
                       backend=spec.get("backend", "auto"), elements=elements)
    except KeyError as exc:
        raise FormatError(f"circuit: missing key {exc.args[0]!r}") from None


def _jsonable(obj):
    """JSON-safe copy (numpy scalars and arrays to Python, non-finite floats to None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_toml(data: dict) -> str:
    """A small TOML writer for config dicts (scalars, lists, nested tables). ``None``
    values have no TOML spelling: they are written as comments (the key keeps its default)."""

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            v = float(v)
            return repr(v) if np.isfinite(v) else ("nan" if np.isnan(v) else ("inf" if v > 0 else "-inf"))
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise ConfigError(f"cannot write {v!r} ({type(v).__name__}) to TOML")

    lines: list[str] = []

    def table(d: dict, prefix: str):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix:
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"# {k}: not set" if v is None else f"{k} = {val(v)}")
        for k, v in tables.items():
            table(v, f"{prefix}.{k}" if prefix else k)

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _conductance_csv(g: np.ndarray, net: Network, tunable, edge_data: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["edge", "tail", "head", "conductance", "resistance"] + (["tunable"] if tunable is not None else [])
               + list(edge_data))
    fmt = lambda v: repr(float(v)) if isinstance(v, (float, np.floating)) else v  # noqa: E731
    for e in range(g.size):
        row = [e, int(net.edges[e, 0]), int(net.edges[e, 1]), repr(float(g[e])), repr(float(1.0 / g[e]))]
        w.writerow(row + ([bool(tunable[e])] if tunable is not None else [])
                   + [fmt(col[e].item()) for col in edge_data.values()])
    return buf.getvalue()


# ----------------------------------------------------------------------------- save
def save(path, circuit: Circuit, conductances, *, config=None, history=None, metadata=None,
         tunable=None, edge_data=None) -> Path:
    """Write ``circuit`` with ``conductances`` (m,) to ``path`` (a directory, created; or a
    ``.zip`` archive). ``config``: a :class:`~kirchnet.config.TrainConfig` or dict;
    ``history``: a :class:`~kirchnet.training.History` or a list of records; ``metadata``:
    a JSON-able dict (e.g. metrics); ``tunable``: the boolean mask (m,) of trained edges;
    ``edge_data``: extra (m,) columns of ``conductances.csv`` (e.g. mean |current|).
    Files are written atomically; returns ``path``."""
    from . import __version__
    from .experiments.io import write_bytes

    if not isinstance(circuit, Circuit):
        raise TypeError(f"circuit must be a kirchnet.Circuit, got {type(circuit).__name__}")
    g = circuit.check_conductances(conductances).astype(np.float64)
    net = circuit.network
    mask = None
    if tunable is not None:
        mask = np.asarray(tunable, dtype=bool)
        if mask.shape != g.shape:
            raise FormatError(f"tunable must be a boolean mask of shape {g.shape}, got {mask.shape}")
    extra = {}
    for name, col in (edge_data or {}).items():
        col = np.asarray(col)
        if col.shape != g.shape:
            raise FormatError(f"edge_data[{name!r}] must have shape {g.shape}, got {col.shape}")
        extra[str(name)] = col
    cfg = None
    if config is not None:
        cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        cfg = _jsonable(cfg)
    hist = None
    if history is not None:
        hist = history.to_dicts() if hasattr(history, "to_dicts") else _jsonable(list(history))
    index = {
        "format": FORMAT, "version": FORMAT_VERSION, "kirchnet_version": __version__,
        "network": {"n_nodes": int(net.n_nodes), "edges": net.edges.tolist(),
                    "labels": None if net.labels is None else [_encode_label(v) for v in net.labels],
                    "positions": None if net.positions is None else net.positions.tolist()},
        "circuit": _encode_circuit(circuit),
        "elements": circuit.elements.to_dict()["elements"],
        "conductances": {"file": "conductances.npy", "csv": "conductances.csv", "n_edges": int(g.size),
                         "unit": "S"},
        "tunable": None if mask is None else mask.tolist(),
        "config": cfg,
        "history": None if hist is None else "history.json",
        "metadata": _jsonable(dict(metadata or {})),
        "layered": _encode_layered(circuit),
    }
    npy = io.BytesIO()
    np.save(npy, g, allow_pickle=False)
    files = {INDEX: json.dumps(index, indent=1, allow_nan=False).encode("utf-8"),
             "conductances.npy": npy.getvalue(),
             "conductances.csv": _conductance_csv(g, net, mask, extra).encode("utf-8")}
    if cfg is not None:
        files["config.toml"] = ("# training config saved by kirchnet.save (the copy in kirchnet.json is "
                                "authoritative)\n" + to_toml(cfg)).encode("utf-8")
    if hist is not None:
        files["history.json"] = json.dumps(hist, indent=1, allow_nan=False).encode("utf-8")
    path = Path(path)
    if path.suffix == ".zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        write_bytes(path, buf.getvalue())
    else:
        if path.exists() and not path.is_dir():
            raise FormatError(f"{path} exists and is not a directory; kirchnet.save writes a directory "
                              f"(or a .zip archive)")
        path.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            if name != INDEX:
                write_bytes(path / name, data)
        write_bytes(path / INDEX, files[INDEX])  # the index last: a complete save has one
    return path


# ----------------------------------------------------------------------------- load
def _reader(path: Path):
    if path.is_dir():
        def read(name):
            p = path / name
            return p.read_bytes() if p.exists() else None
        return read
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            files = {name: zf.read(name) for name in zf.namelist()}
        return files.get
    if not path.exists():
        raise FormatError(f"{path}: no such file or directory")
    raise FormatError(f"{path} is neither a kirchnet save directory nor a .zip archive")


def load(path) -> Saved:
    """Read what :func:`save` wrote (a directory or a ``.zip``); returns :class:`Saved`.

    Raises :class:`~kirchnet.errors.FormatError` for a missing index, a different format,
    an unknown format version or an unknown element law."""
    path = Path(path)
    read = _reader(path)
    raw = read(INDEX)
    if raw is None:
        raise FormatError(f"{path}: no {INDEX} (not a kirchnet save; for a `kirchnet train` output "
                          f"directory of an older version use kirchnet.load_run)")
    try:
        index = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}/{INDEX}: invalid JSON: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        got = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise FormatError(f"{path}/{INDEX}: format is {got!r}, expected {FORMAT!r}")
    version = index.get("version")
    if version != FORMAT_VERSION:
        raise FormatError(f"{path}/{INDEX}: format version {version!r} is not supported by kirchnet "
                          f"(this version reads version {FORMAT_VERSION}); upgrade kirchnet or re-save the "
                          f"network with a matching version")
    try:
        nd = index["network"]
        labels = nd.get("labels")
        net = Network(int(nd["n_nodes"]), np.asarray(nd["edges"], dtype=np.int64).reshape(-1, 2),
                      positions=None if nd.get("positions") is None else np.asarray(nd["positions"], float),
                      labels=None if labels is None else tuple(_decode_label(v) for v in labels))
        circuit = _decode_circuit(net, index["circuit"], _decode_elements(net, index.get("elements") or [], path))
        cinfo = index["conductances"]
    except KeyError as exc:
        raise FormatError(f"{path}/{INDEX}: missing key {exc.args[0]!r}") from None
    data = read(cinfo.get("file", "conductances.npy"))
    if data is not None:
        g = np.load(io.BytesIO(data), allow_pickle=False)
    else:
        text = read(cinfo.get("csv", "conductances.csv"))
        if text is None:
            raise FormatError(f"{path}: neither conductances.npy nor conductances.csv is present")
        rows = list(csv.DictReader(io.StringIO(text.decode("utf-8"))))
        g = np.array([float(r["conductance"]) for r in sorted(rows, key=lambda r: int(r["edge"]))])
    if g.shape != (net.n_edges,):
        raise FormatError(f"{path}: {g.size} conductances for a network of {net.n_edges} edges")
    g = circuit.check_conductances(g)
    config = index.get("config")
    if config is not None:
        from .config import TrainConfig

        try:
            config = TrainConfig.from_dict(config, source=f"{path}/{INDEX}: config")
        except ConfigError:
            pass  # keep the raw dict (e.g. written by another version)
    history = None
    if index.get("history"):
        h = read(index["history"])
        history = None if h is None else json.loads(h)
    tunable = None if index.get("tunable") is None else np.asarray(index["tunable"], dtype=bool)
    _decode_layered(circuit, index.get("layered"), path)
    return Saved(circuit, g, config, history, index.get("metadata") or {}, tunable)


def load_run(run_dir) -> Saved:
    """Load a ``kirchnet train`` output directory: its save (``kirchnet.json``), or, for a run
    written before the format existed, the circuit rebuilt from ``config.json`` (deterministic
    by seed) with ``conductances.csv``. ``metadata`` holds the run's ``metrics.json``."""
    run_dir = Path(run_dir)
    if (run_dir / INDEX).exists():
        saved = load(run_dir)
    else:
        from .config import TrainConfig
        from .experiments.run import setup

        cfg_path = run_dir / "config.json"
        if not cfg_path.exists():
            raise FormatError(f"{run_dir}: neither {INDEX} nor config.json found; is this a "
                              f"`kirchnet train` output directory?")
        config = TrainConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")), source=str(cfg_path))
        _, _, circuit, _, _, mask = setup(config)
        with open(run_dir / "conductances.csv", encoding="utf-8") as fh:
            rows = sorted(csv.DictReader(fh), key=lambda r: int(r["edge"]))
        g = circuit.check_conductances(np.array([float(r["conductance"]) for r in rows]))
        hist = run_dir / "history.json"
        history = json.loads(hist.read_text(encoding="utf-8")) if hist.exists() else None
        saved = Saved(circuit, g, config, history, {}, mask)
    metrics = run_dir / "metrics.json"
    if metrics.exists() and "metrics" not in saved.metadata:
        saved.metadata = {**saved.metadata, "metrics": json.loads(metrics.read_text(encoding="utf-8"))}
    return saved
