"""SPICE interoperability: netlist export / import and an ngspice batch runner.

Export (:func:`to_netlist`) writes a :class:`~kirchnet.Circuit`, its conductances and
one input sample as R, V and I elements. SPICE node ``0`` is the circuit's ground and
kirchnet node ``i`` is named ``n<i>`` (:func:`spice_node_names`). Element mapping:

* edge ``e = (a -> b)``: ``R<e> n<a> n<b> 1/g_e``;
* a series source on edge ``e`` (``w_e = u_a - u_b + s_e``): the resistor goes from
  ``n<a>`` to an internal node ``s<e>`` and ``VS<e> n<b> s<e> DC s_e``, so that
  ``u_s = u_b - s_e`` and the resistor voltage is ``u_a - u_b + s_e``;
* a clamped input node ``v`` (or an extra clamp): ``VN<v> n<v> 0 DC x`` (``VC<v>``);
* an injected node current ``J_v``: ``I<v> 0 n<v> DC J_v`` (SPICE current flows from
  the first node through the source into the second node).

Diodes (:mod:`kirchnet.elements`). A :class:`~kirchnet.elements.Diode` edge is
``D<e> n<a> n<b> KN_D<k> area=g_e`` (anode = the tail ``a``, cathode = the head ``b``,
area factor = the edge's scale ``g_e``), with one ``.model KN_D<k> D(IS=... N=...)``
card per distinct law. ngspice's diode is ``Is area (exp(v / (N Vt)) - 1)`` with ``Vt``
at its default temperature 27 C, :data:`NGSPICE_THERMAL_VOLTAGE` (ngspice's constants,
CODATA 2014), which is also the default thermal voltage of
:class:`~kirchnet.elements.Diode` (:data:`~kirchnet.elements.THERMAL_VOLTAGE_27C`): a
default law's card has ``N = n``. Only ``N Vt`` enters, so a law with another thermal
voltage is written with ``N = n Vt_law / Vt_ngspice`` (equal up to rounding).
The law's linear continuation above ``max_exponent n Vt`` (2.6 V for the default diode,
where it would carry 1e29 A) has no SPICE counterpart; below it the two laws are equal.
Two differences from Shockley's law are ngspice's, not the netlist's, and are handled
explicitly: ngspice adds ``GMIN`` (default 1e-12 S) in parallel with every junction, so
netlists with diodes set ``.options gmin=0`` (:data:`SPICE_GMIN`: the netlist then
describes kirchnet's circuit exactly); and below ``-3 N Vt`` ngspice replaces the
exponential by ``-Is area (1 + (3 N Vt / (e v))^3)`` (C1 at the joint), which changes a
reverse-biased diode's current by at most ``0.4 %`` of its tiny ``Is area``.
Ideal diodes and rectifiers have no exact SPICE equivalent: an
:class:`~kirchnet.elements.IdealDiode` is ``D<e> n<a> n<b> KN_IDEAL`` with the steep
model ``ideal_model = (IS, N)`` (default :data:`IDEAL_MODEL` ``(1e-15, 1e-3)``: forward
drop ``N Vt ln(1 + i / IS)``, 0.7 mV at 1 mA, reverse current ``IS``); the error to the
ideal solution is proportional to ``N`` (tested). A :class:`~kirchnet.elements.Rectifier`
is that diode in series with the edge's resistor through an internal node ``d<e>``:
``R<e> n<a> d<e> 1/g_e`` and ``D<e> d<e> n<b> KN_IDEAL``. ``from_netlist(...,
ideal=True)`` reads these back as the ideal elements (exact round trip).

Import (:func:`from_netlist`, :func:`read_netlist`) maps a netlist of R, D, V and I
elements (and diode ``.model`` cards) back onto a circuit: ground is node ``0`` (or
``gnd``); R and D elements are the edges; a V source from a node to ground clamps that
node (an input); a V source between two non-ground nodes must be in series with exactly
one resistor or diode (one of its nodes touches only that element and the source) and
becomes a series source on that edge; I sources become injected currents. Anything else
raises :class:`~kirchnet.errors.NetlistError` with the line.

The ngspice runner (:func:`ngspice_potentials`) runs many operating points in ONE
``ngspice -b`` process: the first sample is in the netlist, each further sample
``alter``-s the changed sources and runs ``op`` again inside a ``.control`` block, and
every operating point is written as exact binary doubles to a raw file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ._validation import as_batch
from .circuit import Circuit, Edge, Pair
from .elements import Diode, IdealDiode, Law, Rectifier, Resistor
from .errors import FloatingComponentError, NetlistError, ParameterError, ShapeError, SimulatorError
from .network import Network

__all__ = [
    "SpiceCircuit", "to_netlist", "write_netlist", "from_netlist", "read_netlist",
    "parse_value", "spice_node_names", "find_ngspice", "ngspice_available", "run_ngspice",
    "ngspice_potentials", "NetlistError", "SimulatorError", "NGSPICE_THERMAL_VOLTAGE",
    "IDEAL_MODEL", "SPICE_GMIN",
]

#: ngspice's thermal voltage ``k T / q`` at its default temperature 27 C (TNOM = TEMP =
#: 300.15 K), computed as ngspice does (``CONSTKoverQ * T``) from its ``const.h``
#: constants (CODATA 2014: k = 1.38064852e-23 J/K, q = 1.6021766208e-19 C; ngspice >= 27).
#: The ngspice tests measure it from a one-diode operating point.
NGSPICE_THERMAL_VOLTAGE = (1.38064852e-23 / 1.6021766208e-19) * 300.15
#: default steep model ``(IS, N)`` written for ideal diodes and rectifiers (``KN_IDEAL``)
IDEAL_MODEL = (1e-15, 1e-3)
#: ``.options gmin`` of netlists with diodes: no conductance in parallel with the junctions
SPICE_GMIN = 0.0
#: name of the steep diode model of ideal diodes and rectifiers
IDEAL_MODEL_NAME = "KN_IDEAL"

# ----------------------------------------------------------------------------- values
_SUFFIX = {"t": 1e12, "g": 1e9, "meg": 1e6, "k": 1e3, "mil": 25.4e-6, "m": 1e-3, "u": 1e-6,
           "n": 1e-9, "p": 1e-12, "f": 1e-15, "a": 1e-18}
_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(meg|mil|[tgkmunpfa])?[a-z]*$")


def parse_value(token: str) -> float:
    """A SPICE number: ``1.5``, ``2e-3``, ``4.7k``, ``1meg``, ``10u``, ``3mA`` (units ignored).

    Suffixes (case-insensitive): t=1e12, g=1e9, meg=1e6, k=1e3, mil=25.4e-6, m=1e-3,
    u=1e-6, n=1e-9, p=1e-12, f=1e-15, a=1e-18. Raises ``ValueError`` if not a number.
    """
    match = _NUMBER.match(token.strip().lower())
    if match is None:
        raise ValueError(f"{token!r} is not a SPICE number")
    value = float(match.group(1))
    if match.group(2):
        value *= _SUFFIX[match.group(2)]
    return value


def _fmt(value: float) -> str:
    """Shortest text that round-trips the double exactly (17 significant digits at most)."""
    return repr(float(value))


# ----------------------------------------------------------------------------- export
def spice_node_names(circuit: Circuit) -> list[str]:
    """SPICE name of every kirchnet node: ``"0"`` for the ground, ``"n<i>"`` otherwise."""
    names = [f"n{i}" for i in range(circuit.network.n_nodes)]
    names[circuit.ground] = "0"
    return names


def _sample(values, width: int, name: str) -> np.ndarray:
    if values is None:
        return np.zeros(width)
    arr, _ = as_batch(values, width, name)
    if arr.shape[0] != 1:
        raise ShapeError(f"{name}: export takes one sample, got a batch of {arr.shape[0]}")
    return arr[0]


@dataclass(frozen=True)
class _Elements:
    """The SPICE elements of a circuit: names, nodes and the driver column they follow."""

    lines: list[str]  # element lines and .model cards (fixed)
    sources: list[tuple[str, str, str]]  # (name, n+, n-) for V drivers, in driver order
    options: str  # .options of the circuit's element laws ("" for resistor networks)


def _spice_emission(law: Diode) -> float:
    """The model card's ``N``: ``n Vt_law / Vt_ngspice`` (so that ``N Vt_ngspice = n Vt_law``)."""
    if law.thermal_voltage == NGSPICE_THERMAL_VOLTAGE:
        return law.emission
    return law.emission * law.thermal_voltage / NGSPICE_THERMAL_VOLTAGE


def _check_ideal_model(ideal_model) -> tuple[float, float]:
    try:
        IS, N = (float(v) for v in ideal_model)
    except (TypeError, ValueError):
        raise ParameterError(f"ideal_model must be a pair (IS, N) of positive numbers "
                             f"(amperes, emission coefficient), got {ideal_model!r}") from None
    if not (np.isfinite(IS) and np.isfinite(N) and IS > 0 and N > 0):
        raise ParameterError(f"ideal_model must be a pair (IS, N) of finite positive numbers "
                             f"(amperes, emission coefficient), got {ideal_model!r}")
    return IS, N


def _elements(circuit: Circuit, conductances: np.ndarray, ideal_model=IDEAL_MODEL,
              gmin: float = SPICE_GMIN) -> _Elements:
    names = spice_node_names(circuit)
    net = circuit.network
    r = 1.0 / conductances
    sink = [names[b] for b in net.heads]
    for e in circuit.source_edges:
        sink[e] = f"s{e}"
    emap = circuit.elements
    laws = emap.laws
    law_index = emap.law_index
    models: list[str] = []
    model_of: dict[int, str] = {}  # law position -> model name
    ideal = False
    for j, law in enumerate(laws):
        if not np.any(law_index == j) or isinstance(law, Resistor):
            continue
        if isinstance(law, Diode):
            model_of[j] = f"KN_D{len(model_of) + 1}"
            models.append(f".model {model_of[j]} D(IS={_fmt(law.saturation_current)} "
                          f"N={_fmt(_spice_emission(law))})")
        elif isinstance(law, (IdealDiode, Rectifier)):
            ideal = True
        else:  # a law this module does not know: its own cards
            card = law.model_card()
            if card:
                models.append(card)
    if ideal:
        IS, N = _check_ideal_model(ideal_model)
        models.append(f".model {IDEAL_MODEL_NAME} D(IS={_fmt(IS)} N={_fmt(N)})")
    lines = []
    for e, a in enumerate(net.tails):
        j = int(law_index[e])
        law = laws[j]
        if isinstance(law, Resistor):
            lines.append(f"R{e} {names[a]} {sink[e]} {_fmt(r[e])}")
        elif isinstance(law, Diode):
            lines.append(f"D{e} {names[a]} {sink[e]} {model_of[j]} area={_fmt(conductances[e])}")
        elif isinstance(law, IdealDiode):
            lines.append(f"D{e} {names[a]} {sink[e]} {IDEAL_MODEL_NAME}")
        elif isinstance(law, Rectifier):
            lines.append(f"R{e} {names[a]} d{e} {_fmt(r[e])}")
            lines.append(f"D{e} d{e} {sink[e]} {IDEAL_MODEL_NAME}")
        else:
            lines += law.spice(str(e), names[a], sink[e], float(conductances[e])).splitlines()
    lines += models
    sources = [(f"VN{v}", names[v], "0") for v in circuit.input_nodes]
    sources += [(f"VS{e}", names[net.heads[e]], f"s{e}") for e in circuit.source_edges]
    sources += [(f"VC{v}", names[v], "0") for v in circuit.clamped_nodes]
    options = ""
    if models:
        gmin = float(gmin)
        if not (np.isfinite(gmin) and gmin >= 0):
            raise ParameterError(f"gmin must be a finite conductance >= 0 (siemens), got {gmin!r}")
        options = f"gmin={_fmt(gmin)}"
    return _Elements(lines, sources, options)


def _driver_values(circuit: Circuit, x, clamp) -> np.ndarray:
    """Driver values (b, D) in the order node inputs, source edges, extra clamps."""
    xn, xs, xc, _ = circuit.driver_values(np.zeros(circuit.n_inputs) if x is None else x, clamp)
    return np.concatenate([xn, xs, xc], axis=1)


def to_netlist(circuit: Circuit, conductances, x=None, *, currents=None, clamp=None,
               title: str = "kirchnet circuit", op: bool = True, ideal_model=IDEAL_MODEL,
               gmin: float = SPICE_GMIN) -> str:
    """SPICE netlist text of ``circuit`` at ``conductances`` driven by one sample.

    ``x`` (n_inputs,) input sample (default zeros; every input gets a source even at 0 V),
    ``currents`` (n,) injected node currents (an I source per non-zero entry but the ground's), ``clamp``
    (n_clamped,) potentials of the extra clamped nodes. Values are written with 17
    significant digits so that the netlist reproduces the circuit to rounding error.
    ``op=True`` adds an ``.op`` analysis line. Circuits with diodes get one ``.model``
    card per distinct law and ``.options gmin=<gmin>`` (default 0: ngspice's junction GMIN
    would add ``gmin`` siemens in parallel with every diode); ideal diodes and rectifiers
    are written with the steep model ``ideal_model = (IS, N)``. See the module docstring.
    """
    g = circuit.check_conductances(conductances)
    values = _driver_values(circuit, x, clamp)
    if values.shape[0] != 1:
        raise ShapeError(f"x: export takes one sample, got a batch of {values.shape[0]}")
    J = None if currents is None else _sample(currents, circuit.network.n_nodes, "currents")
    el = _elements(circuit, g, ideal_model, gmin)
    title = " ".join(str(title).split()) or "kirchnet circuit"
    kinds = "resistors" if circuit.is_linear else "edges"
    out = [title, f"* kirchnet export: {circuit.network.n_nodes} nodes, {circuit.network.n_edges} "
                  f"{kinds}, ground = SPICE node 0, kirchnet node i = n<i>"]
    if el.options:
        out.append(f".options {el.options}")
    out += el.lines
    # sources in the order of the circuit's inputs (then the extra clamps), so that an
    # import gives back x (followed by the clamp values) column for column
    first = np.argsort(np.concatenate([circuit._node_cols, circuit._edge_cols]), kind="stable")
    order = np.concatenate([first, np.arange(first.size, len(el.sources))]).astype(int)
    out += [f"{el.sources[i][0]} {el.sources[i][1]} {el.sources[i][2]} DC {_fmt(values[0, i])}"
            for i in order]
    if J is not None:
        names = spice_node_names(circuit)
        out += [f"I{v} 0 {names[v]} DC {_fmt(J[v])}" for v in np.flatnonzero(J)
                if v != circuit.ground]
    if op:
        out.append(".op")
    out.append(".end")
    return "\n".join(out) + "\n"


def write_netlist(path, circuit: Circuit, conductances, x=None, **kwargs) -> Path:
    """Write :func:`to_netlist` to ``path`` and return the path."""
    path = Path(path)
    path.write_text(to_netlist(circuit, conductances, x, **kwargs))
    return path


# ----------------------------------------------------------------------------- import
@dataclass(frozen=True, eq=False)
class SpiceCircuit:
    """A circuit read from a netlist, with its parameters and operating point.

    ``circuit`` (ground = node 0), ``conductances`` (m,), ``x`` (n_inputs,) the source
    values, ``currents`` (n,) injected node currents or None, ``node_names`` the SPICE
    name of every node, ``resistor_names`` (m,) the name of every edge's element (R or
    D) and ``input_names`` (n_inputs,) the source names, ``title`` the netlist's title
    line. ``circuit.elements`` holds the diode laws; for diode edges ``conductances``
    holds the area factors.
    """

    circuit: Circuit
    conductances: np.ndarray
    x: np.ndarray
    currents: np.ndarray | None
    node_names: tuple[str, ...]
    resistor_names: tuple[str, ...]
    input_names: tuple[str, ...]
    title: str

    def node(self, name: str) -> int:
        """kirchnet node id of a SPICE node name (case-insensitive; ``gnd`` is ``0``)."""
        key = _node_key(str(name))
        try:
            return self.node_names.index(key)
        except ValueError:
            raise KeyError(f"no node named {name!r} in the netlist") from None

    def solve(self):
        """The circuit's operating point (a :class:`~kirchnet.State` with batch 1)."""
        return self.circuit.solve(self.conductances, self.x, currents=self.currents)


_IGNORED_DOT = {".op", ".options", ".option", ".opt", ".print", ".save", ".probe", ".plot",
                ".temp", ".width", ".tran", ".ac", ".dc", ".noise", ".tf", ".ic", ".nodeset",
                ".meas", ".measure", ".four", ".sens", ".pz", ".disto", ".csparam", ".backanno",
                ".title"}


def _node_key(name: str) -> str:
    name = name.lower()
    return "0" if name in ("0", "gnd") else name


def _logical_lines(text: str):
    """Yield ``(line_number, tokens)`` per logical line after the title, up to ``.end``."""
    physical = text.splitlines()
    pending: list | None = None  # [line_no, text]
    inside_control = False
    out = []
    for no, raw in enumerate(physical[1:], start=2):
        line = raw.split(";", 1)[0]
        line = re.split(r"\s\$", line, maxsplit=1)[0]
        stripped = line.strip()
        if not stripped or stripped.startswith("*"):
            continue
        low = stripped.lower()
        if inside_control:
            if low.startswith(".endc"):
                inside_control = False
            continue
        if low.startswith(".control"):
            inside_control = True
            continue
        if stripped.startswith("+"):
            if pending is None:
                raise NetlistError("continuation line '+' has no line to continue", no)
            pending[1] += " " + stripped[1:]
            continue
        if pending is not None:
            out.append(pending)
        pending = [no, stripped]
    if pending is not None:
        out.append(pending)
    if inside_control:
        raise NetlistError(".control block is not closed by .endc")
    for no, content in out:
        tokens = content.replace("=", " = ").replace(",", " ").replace("(", " ( ").replace(")", " ) ").split()
        if tokens[0].lower() == ".end":
            return
        yield no, tokens


def _number(token: str, what: str, no: int) -> float:
    try:
        value = parse_value(token)
    except ValueError:
        raise NetlistError(f"{what}: cannot read {token!r} as a number", no) from None
    if not np.isfinite(value):
        raise NetlistError(f"{what}: value {token!r} is not finite", no)
    return value


def _source_value(name: str, rest: list[str], no: int) -> float:
    """DC value of a V or I source from the tokens after its nodes: ``[DC] v [AC mag [phase]]``."""
    rest = [t.lower() for t in rest]
    value = 0.0
    if rest and rest[0] == "dc":
        rest = rest[1:]
        if rest and rest[0] == "=":
            rest = rest[1:]
        if not rest:
            raise NetlistError(f"{name}: 'DC' is not followed by a value", no)
    if rest and _NUMBER.match(rest[0]):
        value = _number(rest[0], name, no)
        rest = rest[1:]
    if rest and rest[0] == "ac":  # small-signal magnitude/phase: irrelevant to the operating point
        rest = rest[1:]
        for _ in range(2):
            if rest and _NUMBER.match(rest[0]):
                rest = rest[1:]
    if rest:
        raise NetlistError(f"{name}: unsupported source specification {' '.join(rest)!r}; "
                           f"kirchnet reads DC values only ('{name} n+ n- [DC] value')", no)
    return value


#: ngspice's defaults of the diode model parameters kirchnet reads
_DIODE_DEFAULTS = {"is": 1e-14, "n": 1.0}


def _read_model(tokens: list[str], no: int) -> tuple[str, dict[str, float]]:
    """``.model NAME D(IS=... N=...)`` -> (lower-case name, {"is": ..., "n": ...})."""
    if len(tokens) < 3 or tokens[1] in "=()" or tokens[2] in "=()":
        raise NetlistError(".model needs a name and a type: write '.model NAME D(IS=... N=...)'", no)
    name, kind = tokens[1], tokens[2]
    if kind.lower() != "d":
        raise NetlistError(f".model {name}: model type {kind!r} is not supported; kirchnet imports "
                           f"diode models (type D) only", no)
    rest = [t for t in tokens[3:] if t not in ("(", ")")]
    params = dict(_DIODE_DEFAULTS)
    given: set[str] = set()
    while rest:
        if len(rest) < 3 or rest[1] != "=" or rest[0] == "=":
            raise NetlistError(f".model {name}: expected 'PARAM=value', got "
                               f"{' '.join(rest[:3])!r}", no)
        key = rest[0].lower()
        if key not in params:
            raise NetlistError(f".model {name}: diode model parameter {rest[0].upper()!r} is not "
                               f"supported; kirchnet's diode is Shockley's law with IS and N only "
                               f"(remove {rest[0].upper()}=...)", no)
        if key in given:
            raise NetlistError(f".model {name}: parameter {key.upper()} is given twice", no)
        value = _number(rest[2], f".model {name} {key.upper()}", no)
        if not value > 0:
            raise NetlistError(f".model {name}: {key.upper()} must be positive, got {rest[2]!r}", no)
        params[key] = value
        given.add(key)
        rest = rest[3:]
    return name.lower(), params


def _diode_area(name: str, rest: list[str], no: int) -> tuple[str, float]:
    """Model name and area of a D element from the tokens after its nodes:
    ``model [area]`` or ``model area=value``."""
    if not rest or rest[0] in ("=", "(", ")"):
        raise NetlistError(f"{name}: missing model name; write '{name} anode cathode model [area]'", no)
    model, rest = rest[0].lower(), rest[1:]
    area = None
    if rest and rest[0] not in ("=", "(", ")") and rest[1:2] != ["="] and _NUMBER.match(rest[0].lower()):
        area, rest = _number(rest[0], f"{name} area", no), rest[1:]
    if len(rest) >= 3 and rest[0].lower() == "area" and rest[1] == "=" and area is None:
        area, rest = _number(rest[2], f"{name} area", no), rest[3:]
    if rest:
        raise NetlistError(f"{name}: unsupported diode parameter(s) {' '.join(rest)!r}; write "
                           f"'{name} anode cathode model [area]' or '... model area=value'", no)
    if area is None:
        area = 1.0
    if not area > 0:
        raise NetlistError(f"{name}: area must be positive, got {area!r}", no)
    return model, area


def _merge_rectifiers(elems: list, vsrc: list, isrc: list) -> tuple[list, set[str]]:
    """Ideal import: a ``KN_IDEAL`` diode in series with one resistor through a node that
    touches only those two elements (and no source) becomes one Rectifier edge, oriented
    along the diode (``R a m`` + ``D m b``, or ``D a m`` + ``R m b``: edge ``a -> b``,
    ``g = 1/R``), at the position of the first of the two. Returns (elements, removed nodes)."""
    touch: dict[str, list[int]] = {}
    for j, el in enumerate(elems):
        touch.setdefault(el[1], []).append(j)
        touch.setdefault(el[2], []).append(j)
    sources = {t for src in (vsrc, isrc) for _, p, q, _, _ in src for t in (p, q)}
    merged: dict[int, tuple] = {}  # position -> merged element
    dropped: set[int] = set()
    removed: set[str] = set()
    for j, (name, a, b, _, no, model) in enumerate(elems):
        if model != IDEAL_MODEL_NAME.lower() or j in dropped:
            continue
        for mid, diode_is_tail in ((a, False), (b, True)):
            if mid == "0" or mid in sources or len(touch[mid]) != 2:
                continue
            k = touch[mid][0] if touch[mid][1] == j else touch[mid][1]
            r = elems[k]
            if r[5] is not None or k in dropped or k in merged:
                continue
            far = r[2] if r[1] == mid else r[1]
            ends = (a, far) if diode_is_tail else (far, b)
            if ends[0] == ends[1]:
                continue
            merged[min(j, k)] = (name, ends[0], ends[1], r[3], no, "<rectifier>")
            dropped.add(max(j, k))
            removed.add(mid)
            break
    out = [merged.get(j, el) for j, el in enumerate(elems) if j not in dropped]
    return out, removed


def from_netlist(text: str, outputs: Sequence = (), backend: str = "auto",
                 ideal: bool = False) -> SpiceCircuit:
    """Build a :class:`SpiceCircuit` from SPICE netlist text (R, D, V and I elements).

    The first line is the title (SPICE convention). Case-insensitive; comments start with
    ``*`` (whole line) or ``;`` / `` $`` (rest of line); ``+`` continues the previous line;
    ``.end`` stops reading; ``.control`` blocks and analysis/output commands (``.op``,
    ``.options``, ``.print``, ...) are ignored. Values take engineering suffixes.

    Nodes: ``0``/``gnd`` is the ground (kirchnet node 0). The other nodes are numbered
    1, 2, ...: by their integer value when every name is an integer or ``n<integer>``
    (so an exported circuit with ground 0 comes back with the same ids), otherwise in
    order of first appearance. ``outputs``: SPICE node names (node potentials) or
    ``(a, b)`` name pairs (:class:`~kirchnet.Pair`). Inputs are the V sources in netlist
    order; ``x`` holds their values (a source ``V 0 q v`` clamps ``q`` at ``-v``).

    Edges are the R and D elements in netlist order. A diode ``D<name> anode cathode
    model [area]`` (or ``area=value``) is an edge from the anode to the cathode with the
    law :class:`~kirchnet.elements.Diode` and scale ``g_e = area`` (default 1); its model
    ``.model NAME D(IS=... N=...)`` (anywhere in the netlist; ngspice's defaults IS=1e-14,
    N=1) becomes ``Diode(IS, N, thermal_voltage=NGSPICE_THERMAL_VOLTAGE)``, the law ngspice
    simulates at its default 27 C. Other model parameters (RS, CJO, BV, ...), other model
    types and diode instance parameters raise :class:`~kirchnet.errors.NetlistError`.
    kirchnet has no GMIN: the circuit is the netlist at ``.options gmin=0``.

    ``ideal=True`` inverts :func:`to_netlist`'s ideal elements: diodes of the model
    ``KN_IDEAL`` become :class:`~kirchnet.elements.IdealDiode` edges (``g = 1``; an ideal
    diode has no scale) and such a diode in series with one resistor through a node that
    touches nothing else becomes one :class:`~kirchnet.elements.Rectifier` edge
    (``g = 1/R``; the node disappears). By default they are the steep diodes the
    netlist describes.
    """
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        if not any(line.strip() for line in lines):
            raise NetlistError("the netlist is empty")
    title = lines[0].strip() if lines else ""
    resistors, vsrc, isrc = [], [], []  # resistors: every edge element (R and D)
    models: dict[str, tuple[dict[str, float], int]] = {}
    seen: dict[str, int] = {}
    order: dict[str, int] = {}

    def node(tok: str) -> str:
        key = _node_key(tok)
        order.setdefault(key, len(order))
        return key

    for no, tokens in _logical_lines(text):
        head = tokens[0].lower()
        if head.startswith("."):
            if head in _IGNORED_DOT:
                continue
            if head == ".title":
                title = " ".join(tokens[1:])
                continue
            if head == ".model":
                key, params = _read_model(tokens, no)
                if key in models:
                    raise NetlistError(f".model {tokens[1]} is defined twice (first on line "
                                       f"{models[key][1]})", no)
                models[key] = (params, no)
                continue
            raise NetlistError(f"unsupported control line {tokens[0]!r}; kirchnet imports flat "
                               f"netlists of R, D, V and I elements and diode .model cards (no "
                               f"subcircuits, parameters or includes)", no)
        kind, name = head[0], head
        if kind not in "rdvi":
            raise NetlistError(f"unsupported element {tokens[0]!r} (type {kind.upper()!r}); kirchnet "
                               f"imports R, D, V and I elements only", no)
        if name in seen:
            raise NetlistError(f"element {tokens[0]!r} is defined twice (first on line {seen[name]})", no)
        seen[name] = no
        if len(tokens) < 3 or tokens[1] in "=()" or tokens[2] in "=()":
            raise NetlistError(f"{tokens[0]}: expected two node names after the element name", no)
        p, q = node(tokens[1]), node(tokens[2])
        rest = tokens[3:]
        if kind == "r":
            if rest[:2] and rest[0].lower() in ("r", "resistance") and rest[1:2] == ["="]:
                rest = rest[2:]
            if not rest:
                raise NetlistError(f"{tokens[0]}: missing resistance value", no)
            value = _number(rest[0], tokens[0], no)
            if len(rest) > 1:
                raise NetlistError(f"{tokens[0]}: unsupported resistor parameter(s) "
                                   f"{' '.join(rest[1:])!r}; write 'R<name> n1 n2 value'", no)
            if not value > 0:
                raise NetlistError(f"{tokens[0]}: resistance must be positive, got {value!r}", no)
            if p == q:
                raise NetlistError(f"{tokens[0]}: both ends on node {tokens[1]!r} (a shorted "
                                   f"resistor carries no current)", no)
            resistors.append((tokens[0], p, q, 1.0 / value, no, None))
        elif kind == "d":
            model, area = _diode_area(tokens[0], rest, no)
            if p == q:
                raise NetlistError(f"{tokens[0]}: both terminals on node {tokens[1]!r} (a shorted "
                                   f"diode carries no current)", no)
            resistors.append((tokens[0], p, q, area, no, model))
        else:
            value = _source_value(tokens[0], rest, no)
            if p == q:
                raise NetlistError(f"{tokens[0]}: both terminals on node {tokens[1]!r}", no)
            (vsrc if kind == "v" else isrc).append((tokens[0], p, q, value, no))

    if not resistors:
        raise NetlistError("the netlist has no resistors or diodes")
    laws: dict[str, Law] = {}
    removed: set[str] = set()
    if ideal:
        laws[IDEAL_MODEL_NAME.lower()] = IdealDiode()
        laws["<rectifier>"] = Rectifier()
        resistors, removed = _merge_rectifiers(resistors, vsrc, isrc)
    for name, _, _, _, no, model in resistors:
        if model is None or model in laws:
            continue
        if model not in models:
            raise NetlistError(f"{name}: diode model {model!r} is not defined (add a line "
                               f"'.model {model} D(IS=... N=...)')", no)
        params = models[model][0]
        laws[model] = Diode(saturation_current=params["is"], emission=params["n"],
                            thermal_voltage=NGSPICE_THERMAL_VOLTAGE)
    if "0" not in order:
        raise NetlistError("the netlist has no ground node '0' (or 'gnd')")

    # --- series sources: a V between two non-ground nodes, one of which only touches it and one R
    deg_r: dict[str, list[int]] = {}
    for j, (_, p, q, _, _, _) in enumerate(resistors):
        deg_r.setdefault(p, []).append(j)
        deg_r.setdefault(q, []).append(j)
    deg_v: dict[str, int] = {}
    for _, p, q, _, _ in vsrc:
        deg_v[p] = deg_v.get(p, 0) + 1
        deg_v[q] = deg_v.get(q, 0) + 1
    has_i = {p for _, p, _, _, _ in isrc} | {q for _, _, q, _, _ in isrc}

    def internal(k: str) -> bool:
        return k != "0" and len(deg_r.get(k, [])) == 1 and deg_v.get(k, 0) == 1 and k not in has_i

    edge_ends = [[p, q] for _, p, q, _, _, _ in resistors]
    series_of: dict[int, int] = {}  # resistor index -> input column
    inputs_spec: list = []  # ("node", name) or ("edge", resistor index)
    x_vals: list[float] = []
    clamped_by: dict[str, tuple[str, int]] = {}
    for name, p, q, value, no in vsrc:
        if p == "0" or q == "0":
            target, val = (p, value) if q == "0" else (q, -value)
            if target in clamped_by:
                other, other_no = clamped_by[target]
                raise NetlistError(f"{name}: node {target!r} is already held by {other} (line "
                                   f"{other_no}); two voltage sources on one node", no)
            clamped_by[target] = (name, no)
            inputs_spec.append(("node", target))
            x_vals.append(val)
            continue
        # u_p - u_q = value; k is the internal node, the edge runs from the resistor's far end a
        for k, b, s in ((q, p, value), (p, q, -value)):
            if internal(k):
                break
        else:
            raise NetlistError(
                f"{name}: a voltage source between two non-ground nodes ({p!r}, {q!r}) must be in "
                f"series with exactly one resistor or diode: one of its nodes may connect only "
                f"to this source and that element", no)
        j = deg_r[k][0]
        if j in series_of:
            raise NetlistError(f"{name}: element {resistors[j][0]} already has a series source; "
                               f"one source per element", no)
        rp, rq = edge_ends[j]
        a = rq if rp == k else rp
        if a == b:
            raise NetlistError(f"{name}: the source and element {resistors[j][0]} form a loop "
                               f"on node {b!r}", no)
        edge_ends[j] = [a, b]
        series_of[j] = len(inputs_spec)
        inputs_spec.append(("edge", j))
        x_vals.append(s)
        removed.add(k)

    # --- node numbering
    names = [k for k in order if k != "0" and k not in removed]
    ints = []
    for k in names:
        m = re.fullmatch(r"n?(\d+)", k)
        ints.append(int(m.group(1)) if m else None)
    if names and all(v is not None for v in ints) and len(set(ints)) == len(ints):
        names = [k for _, k in sorted(zip(ints, names))]
    node_names = ("0", *names)
    index = {k: i for i, k in enumerate(node_names)}
    edges = np.array([[index[a], index[b]] for a, b in edge_ends], dtype=np.int64)
    g = np.array([r[3] for r in resistors], dtype=float)
    elements: dict[Law, list[int]] = {}
    for e, r in enumerate(resistors):
        if r[5] is not None:
            elements.setdefault(laws[r[5]], []).append(e)
    inputs = [index[v] if kind == "node" else Edge(v) for kind, v in inputs_spec]
    input_names = tuple(vsrc[i][0] for i in range(len(vsrc)))
    J = None
    if isrc:
        J = np.zeros(len(node_names))
        for _, p, q, value, _ in isrc:  # current flows p -> (through the source) -> q
            J[index[p]] -= value
            J[index[q]] += value
        J[0] = 0.0  # what flows into the ground is absorbed there
    outs = []
    for item in outputs:
        try:
            if isinstance(item, (tuple, list)) and len(item) == 2:
                outs.append(Pair(index[_node_key(str(item[0]))], index[_node_key(str(item[1]))]))
            else:
                outs.append(index[_node_key(str(item))])
        except KeyError as exc:
            raise NetlistError(f"outputs: no node named {exc.args[0]!r} in the netlist") from None
    try:
        circuit = Circuit(Network(len(node_names), edges), ground=0, inputs=inputs,
                          outputs=outs, backend=backend, elements=elements or None)
    except FloatingComponentError as exc:
        bad = ", ".join(node_names[v] for v in exc.nodes[:10])
        raise FloatingComponentError(
            f"nodes {bad} have no path through resistors or diodes to the ground or to a node held by a "
            f"voltage source, so their potentials are undetermined (ngspice would report a "
            f"singular matrix)", nodes=exc.nodes) from None
    return SpiceCircuit(circuit, g, np.asarray(x_vals, dtype=float), J, node_names,
                        tuple(r[0] for r in resistors), input_names, title)


def read_netlist(path, outputs: Sequence = (), backend: str = "auto",
                 ideal: bool = False) -> SpiceCircuit:
    """:func:`from_netlist` of a file."""
    return from_netlist(Path(path).read_text(), outputs=outputs, backend=backend, ideal=ideal)


# ----------------------------------------------------------------------------- ngspice
def find_ngspice(executable: str | None = None) -> str | None:
    """Path of the ngspice executable (``executable``, ``$NGSPICE`` or ``ngspice`` on PATH)."""
    return shutil.which(executable or os.environ.get("NGSPICE") or "ngspice")


def ngspice_available(executable: str | None = None) -> bool:
    """Whether an ngspice executable can be found."""
    return find_ngspice(executable) is not None


def _read_raw(data: bytes) -> list[dict[str, float]]:
    """Parse concatenated binary raw-file plots (real, one point each)."""
    plots, pos = [], 0
    while pos < len(data):
        idx = data.find(b"Binary:\n", pos)
        if idx < 0:
            break
        header = data[pos:idx].decode("latin-1").splitlines()
        nvar = npts = None
        names, in_vars, complex_ = [], False, False
        for line in header:
            low = line.lower()
            if low.startswith("no. variables:"):
                nvar = int(line.split(":")[1])
            elif low.startswith("no. points:"):
                npts = int(line.split(":")[1])
            elif low.startswith("flags:"):
                complex_ = "complex" in low
            elif low.startswith("variables:"):
                in_vars = True
            elif in_vars and line.strip():
                names.append(line.split()[1].lower())
        if nvar is None or npts is None or len(names) != nvar or complex_:
            raise SimulatorError("unreadable ngspice raw-file header")
        start = idx + len(b"Binary:\n")
        count = nvar * npts
        values = np.frombuffer(data, dtype="<f8", count=count, offset=start)
        plots.append(dict(zip(names, values[-nvar:])))
        pos = start + 8 * count
    return plots


class _NoConvergence(SimulatorError):
    """ngspice ran but returned fewer operating points than asked for."""


def _tail(log: str, lines: int = 15) -> str:
    """The last ``lines`` lines of ngspice's output, for an error message."""
    return "\n".join(log.strip().splitlines()[-lines:])


def run_ngspice(netlist: str, *, executable: str | None = None, timeout: float | None = None,
                raw_name: str = "out.raw") -> tuple[list[dict[str, float]], str]:
    """Run ``ngspice -b`` on ``netlist`` in a temporary directory.

    The netlist should ``write`` binary raw plots to ``raw_name`` (relative path) in its
    ``.control`` block (:func:`ngspice_potentials` builds such a netlist). Returns the
    parsed plots (a dict vector-name -> value per plot) and ngspice's combined output.
    """
    exe = find_ngspice(executable)
    if exe is None:
        raise SimulatorError("ngspice not found: install it (Debian/Ubuntu: apt-get install "
                             "ngspice) or set $NGSPICE to the executable")
    with tempfile.TemporaryDirectory(prefix="kirchnet-spice-") as tmp:
        cir = Path(tmp) / "circuit.cir"
        cir.write_text(netlist)
        try:
            proc = subprocess.run([exe, "-b", str(cir)], cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SimulatorError(f"ngspice did not finish within {timeout} s") from None
        log = proc.stdout + proc.stderr
        raw = Path(tmp) / raw_name
        if proc.returncode != 0:
            raise SimulatorError(f"ngspice failed (exit code {proc.returncode}); last output:\n{_tail(log)}")
        if not raw.exists():
            raise _NoConvergence(f"ngspice wrote no operating point (it did not converge); last "
                                 f"output:\n{_tail(log)}")
        return _read_raw(raw.read_bytes()), log


#: ngspice convergence tolerances of :func:`ngspice_potentials` for circuits with diodes:
#: Newton converges quadratically, so stopping when the last update is below 1e-10
#: relative leaves an error far below the 1e-6 the cross-validation asks for (ngspice's
#: defaults reltol=1e-3, vntol=1e-6 V leave about 1e-7). abstol (A) stays above the
#: rounding of mA branch currents: at 1e-20 some operating points never converge.
NGSPICE_TOLERANCES = "reltol=1e-10 vntol=1e-12 abstol=1e-16"
#: ... and the looser ones :func:`ngspice_potentials` retries with (with a warning) where
#: ngspice does not converge at those (4 runs in 300 on random diode networks of networkx
#: graphs, 3 of them converge at 1e-8 and agree with kirchnet's potentials to 5e-11)
NGSPICE_RETRY_TOLERANCES = ("reltol=1e-8 vntol=1e-10 abstol=1e-15",)


def ngspice_potentials(circuit: Circuit, conductances, x, *, currents=None, clamp=None,
                       executable: str | None = None, timeout: float | None = None,
                       ideal_model=IDEAL_MODEL, gmin: float = SPICE_GMIN,
                       tolerances: str | None = None) -> np.ndarray:
    """Node potentials (b, n) computed by ngspice, for comparison with :meth:`Circuit.solve`.

    ``x`` (n_inputs,) or (b, n_inputs); ``currents`` (n,) or (b, n); ``clamp``
    (n_clamped,) or (b, n_clamped). One ngspice process runs all ``b`` operating points:
    the netlist holds sample 0, and for every further sample the control block
    ``alter``-s the sources whose value changed and runs ``op``. Circuits with diodes are written as by
    :func:`to_netlist` (``ideal_model``, ``gmin``) and solved with ``.options
    <tolerances>``: by default :data:`NGSPICE_TOLERANCES`, then, where ngspice does not
    converge at every operating point, each of :data:`NGSPICE_RETRY_TOLERANCES` in turn
    (a ``RuntimeWarning`` names the one used); tolerances given explicitly are not retried.
    """
    g = circuit.check_conductances(conductances)
    n = circuit.network.n_nodes
    drv = _driver_values(circuit, x, clamp)
    b = drv.shape[0]
    el = _elements(circuit, g, ideal_model, gmin)
    src_names = [s[0] for s in el.sources]
    if currents is None:
        J = np.zeros((b, n))
    else:
        J, _ = as_batch(currents, n, "currents")
        if J.shape[0] == 1:
            J = np.broadcast_to(J, (b, n))
        elif J.shape[0] != b:
            raise ShapeError(f"currents has batch {J.shape[0]} but x has batch {b}")
    names = spice_node_names(circuit)
    inodes = np.flatnonzero(np.any(J != 0, axis=0))
    inodes = inodes[inodes != circuit.ground]  # a current into the ground changes nothing
    src_names += [f"I{v}" for v in inodes]
    vals = np.concatenate([drv, J[:, inodes]], axis=1)  # (b, n_sources)
    drive = [f"{nm} {p} {q} DC {_fmt(v)}" for (nm, p, q), v in zip(el.sources, drv[0])]
    drive += [f"I{v} 0 {names[v]} DC {_fmt(J[0, v])}" for v in inodes]
    drive += [".control", "set filetype=binary", "set appendwrite", "op", "write out.raw"]
    for s in range(1, b):
        changed = np.flatnonzero(vals[s] != vals[s - 1])
        drive += [f"alter {src_names[c]} dc = {_fmt(vals[s, c])}" for c in changed]
        drive += ["op", "write out.raw"]
    drive += ["quit", ".endc", ".end"]
    ladder = (NGSPICE_TOLERANCES, *NGSPICE_RETRY_TOLERANCES) if tolerances is None else (tolerances,)
    for k, tol in enumerate(ladder):
        head = ["kirchnet ngspice run", ".options noacct klu" + (f" {el.options} {tol}" if el.options else "")]
        try:
            plots, log = run_ngspice("\n".join(head + el.lines + drive) + "\n", executable=executable,
                                     timeout=timeout)
            if len(plots) != b:
                raise _NoConvergence(f"ngspice returned {len(plots)} operating points, expected {b} (it "
                                     f"did not converge at every one); last output:\n{_tail(log)}")
        except _NoConvergence as exc:
            if not el.options:  # linear: no tolerances to loosen
                raise SimulatorError(str(exc)) from None
            if k + 1 == len(ladder):
                hint = "" if tolerances is None else (f"; looser ones may converge, e.g. "
                                                      f"tolerances={NGSPICE_RETRY_TOLERANCES[-1]!r}")
                raise SimulatorError(f"{exc}\n(tolerances tried: {', '.join(repr(t) for t in ladder)}"
                                     f"{hint})") from None
            continue
        if k:
            warnings.warn(f"ngspice did not converge with tolerances {ladder[0]!r}; these "
                          f"potentials are ngspice's with {tol!r}", RuntimeWarning, stacklevel=2)
        break
    u = np.zeros((b, n))
    keys = [f"v({nm})" for nm in names]
    for s, plot in enumerate(plots):
        try:
            u[s] = [0.0 if nm == "0" else plot[k] if k in plot else plot[nm]
                    for nm, k in zip(names, keys)]
        except KeyError as exc:
            raise SimulatorError(f"ngspice output lacks node {exc.args[0]!r}") from None
    if not np.isfinite(u).all():
        smp, v = np.argwhere(~np.isfinite(u))[0]
        raise SimulatorError(f"ngspice returned a non-finite potential ({u[smp, v]}) at node {names[v]!r} "
                             f"of operating point {smp}: its solve failed there")
    return u
