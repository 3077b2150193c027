"""NCI molecules as OGB graphs with functional-group labels, prepared once from the rdkit wheel.

Source: `rdkit/Data/NCI/first_5K.smi`, bundled with PyPI `rdkit` (4,999 molecules of the NCI
open database; 8 do not parse with RDKit 2026.09), or any one `.smi` file in
`data_dir/nci_molecules/`. Format: one molecule a line, `SMILES [name ...]` separated by
whitespace; blank lines and `#` comments are skipped. A SMILES that RDKit cannot parse is skipped
and counted; a file where half or more of the SMILES fail is rejected as not being a SMILES file.

Graphs: `ogb.utils.smiles2graph`, OGB's 9 categorical atom features, 3 bond features and both
directions of every bond (Hu et al., 2020, "Open Graph Benchmark").

Labels: for each `rdkit.Chem.Fragments.fr_*` function (functional-group counts), label = count > 0.
Task rule, over all parsed molecules of the source: keep a task when its positive rate lies in
[MIN_POSITIVE_RATE, MAX_POSITIVE_RATE], in name order, dropping a task whose label column equals an
already kept one. On first_5K.smi: 42 groups in range, fr_Nhpyrrole repeats fr_Ar_NH, 41 tasks.
The kept names are stored with the data.

Split: a permutation seeded with SPLIT_SEED: its first 10% validation, next 10% test, rest train.

Prepared copy, `data_dir/nci_molecules/prepared/` (built in a temporary folder, then renamed):
    graphs.npz     node_feat (N, 9) uint8, edge_feat (E, 3) uint8, edge_index (2, E) int32 with
                   node indices local to each graph, node_offsets / edge_offsets (G + 1,) int64
                   (graph g owns nodes node_offsets[g]:node_offsets[g+1]), labels (G, T) uint8,
                   split (G,) uint8 (0 train, 1 validation, 2 test), source_line (G,) int32
    meta.json      task names, source file and its sha256, counts, skipped lines, content hash
                   (written last: its presence marks a complete copy)
The content hash is a sha256 over the arrays (name, dtype, shape, bytes) and the task names, so
it does not depend on zip timestamps; a copy whose source file changed is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from harness.atomic_directory import atomic_directory
from harness.errors import DataMissingError, UserInputError
from harness.records import atomic_write_bytes, atomic_write_text

NAME = "nci_molecules"
BUNDLED = ("NCI", "first_5K.smi")  # under rdkit.RDConfig.RDDataDir
PREPARED = "prepared"
FORMAT_VERSION = 1
MIN_POSITIVE_RATE, MAX_POSITIVE_RATE = 0.02, 0.50  # tasks neither near-empty nor majority-positive
SPLIT_SEED = 0
VALIDATION_FRACTION = TEST_FRACTION = 0.10
SPLITS = ("train", "validation", "test")
ARRAYS = ("node_feat", "edge_feat", "edge_index", "node_offsets", "edge_offsets", "labels", "split", "source_line")
INSTALL_HINT = "pip install rdkit ogb"


def _rdkit():
    try:
        import rdkit  # noqa: F401
        from rdkit import Chem, RDConfig, rdBase
        from rdkit.Chem import Fragments
    except ImportError as exc:
        raise DataMissingError(f"the NCI molecules need RDKit ({exc}); install it: {INSTALL_HINT}") from exc
    return Chem, RDConfig, rdBase, Fragments


def _smiles2graph():
    try:
        from ogb.utils import smiles2graph
    except ImportError as exc:
        raise DataMissingError(
            f"the NCI molecules need ogb's smiles2graph ({exc}); install it: {INSTALL_HINT}"
        ) from exc
    return smiles2graph


def bundled_source() -> Path:
    """rdkit's `first_5K.smi` (raises DataMissingError when rdkit is not installed)."""
    _, RDConfig, _, _ = _rdkit()
    return Path(RDConfig.RDDataDir).joinpath(*BUNDLED)


def locate_source(data_dir: Path) -> Path:
    """The one `.smi` file in `data_dir/nci_molecules/`, else rdkit's bundled `first_5K.smi`."""
    local = sorted((Path(data_dir) / NAME).glob("*.smi"))
    if len(local) > 1:
        raise UserInputError(
            f"{Path(data_dir) / NAME} holds {len(local)} .smi files ({', '.join(p.name for p in local)}); keep one"
        )
    if local:
        return local[0]
    source = bundled_source()
    if not source.is_file():
        raise DataMissingError(
            f"{source} not found (nor a .smi file in {Path(data_dir) / NAME}); reinstall the rdkit wheel: "
            f"pip install --force-reinstall rdkit"
        )
    return source


def read_smiles(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, SMILES) of every molecule line of a `.smi` file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{path} is not a UTF-8 SMILES file ({exc})") from exc
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            entries.append((number, fields[0]))
    if not entries:
        raise UserInputError(f"{path} holds no molecules (expected one `SMILES [name]` per line)")
    return entries


def fragment_functions() -> dict[str, object]:
    """RDKit's functional-group counters `fr_*`, by name."""
    _, _, _, Fragments = _rdkit()
    return {name: getattr(Fragments, name) for name in sorted(dir(Fragments)) if name.startswith("fr_")}


def select_tasks(labels: np.ndarray, names: list[str]) -> list[int]:
    """Columns kept by the task rule: positive rate in range, not a repeat of a kept column."""
    rates = labels.mean(axis=0)
    kept: list[int] = []
    for j in range(len(names)):
        in_range = MIN_POSITIVE_RATE <= rates[j] <= MAX_POSITIVE_RATE
        if in_range and not any(np.array_equal(labels[:, j], labels[:, k]) for k in kept):
            kept.append(j)
    return kept


def split_assignment(n: int) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) per molecule, from a permutation seeded with SPLIT_SEED."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_validation, n_test = int(n * VALIDATION_FRACTION), int(n * TEST_FRACTION)
    split = np.zeros(n, dtype=np.uint8)
    split[order[:n_validation]] = 1
    split[order[n_validation : n_validation + n_test]] = 2
    return split


def content_hash(arrays: dict[str, np.ndarray], task_names: list[str]) -> str:
    digest = hashlib.sha256()
    for key in ARRAYS:
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps(task_names).encode())
    return digest.hexdigest()


def build(source: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Graphs, labels and split of every parsable molecule of `source`, and the metadata."""
    Chem, _, rdBase, _ = _rdkit()
    smiles2graph = _smiles2graph()
    entries = read_smiles(source)
    functions = fragment_functions()
    graphs, rows, lines, skipped = [], [], [], []
    blocker = rdBase.BlockLogs()  # RDKit's parse errors would flood stderr; the skips are counted
    try:
        for number, smiles in entries:
            mol = Chem.MolFromSmiles(smiles)
            if mol is None or mol.GetNumAtoms() == 0:
                skipped.append(number)
                continue
            graphs.append(smiles2graph(smiles))
            rows.append([fn(mol) > 0 for fn in functions.values()])
            lines.append(number)
    finally:
        del blocker
    if 2 * len(skipped) >= len(entries):
        raise UserInputError(
            f"{source}: RDKit could not parse {len(skipped)} of {len(entries)} SMILES "
            f"(lines {', '.join(map(str, skipped[:5]))}{', ...' if len(skipped) > 5 else ''}); "
            f"expected one `SMILES [name]` per line"
        )
    all_labels = np.array(rows, dtype=np.uint8)
    names = list(functions)
    kept = select_tasks(all_labels, names)
    if not kept:
        raise UserInputError(
            f"{source}: no functional group has a positive rate in [{MIN_POSITIVE_RATE}, {MAX_POSITIVE_RATE}] "
            f"over its {len(graphs)} molecules"
        )
    n_nodes = np.array([g["num_nodes"] for g in graphs], dtype=np.int64)
    n_edges = np.array([g["edge_index"].shape[1] for g in graphs], dtype=np.int64)
    arrays = {
        "node_feat": np.concatenate([g["node_feat"] for g in graphs]).astype(np.uint8),
        "edge_feat": np.concatenate([g["edge_feat"] for g in graphs]).astype(np.uint8),
        "edge_index": np.concatenate([g["edge_index"] for g in graphs], axis=1).astype(np.int32),
        "node_offsets": np.concatenate([[0], np.cumsum(n_nodes)]).astype(np.int64),
        "edge_offsets": np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64),
        "labels": all_labels[:, kept],
        "split": split_assignment(len(graphs)),
        "source_line": np.array(lines, dtype=np.int32),
    }
    task_names = [names[j] for j in kept]
    meta = {
        "format_version": FORMAT_VERSION,
        "source": str(source),
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "rdkit_version": rdBase.rdkitVersion,
        "num_molecules": len(entries),
        "num_graphs": len(graphs),
        "num_skipped": len(skipped),
        "skipped_lines": skipped,
        "task_names": task_names,
        "positive_rates": [round(float(r), 6) for r in arrays["labels"].mean(axis=0)],
        "task_rule": f"fr_* with positive rate in [{MIN_POSITIVE_RATE}, {MAX_POSITIVE_RATE}], repeats dropped",
        "split_sizes": {name: int((arrays["split"] == i).sum()) for i, name in enumerate(SPLITS)},
        "content_sha256": content_hash(arrays, task_names),
    }
    return arrays, meta


def _read_meta(prepared: Path) -> dict | None:
    try:
        return json.loads((prepared / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _is_current(prepared: Path, source_sha: str) -> bool:
    """A complete copy (meta.json is written last) of this format, built from this source."""
    meta = _read_meta(prepared)
    return bool(meta) and meta.get("format_version") == FORMAT_VERSION and meta.get("source_sha256") == source_sha


def prepare(data_dir: Path) -> Path:
    """Build `data_dir/nci_molecules/prepared/` from the source unless a complete copy of the same
    source exists; return its path."""
    source = locate_source(Path(data_dir))
    root = Path(data_dir) / NAME
    prepared = root / PREPARED
    source_sha = hashlib.sha256(source.read_bytes()).hexdigest()
    if _is_current(prepared, source_sha):
        return prepared
    arrays, meta = build(source)
    with atomic_directory(prepared, lambda copy: _is_current(copy, source_sha)) as building:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(building / "graphs.npz", buffer.getvalue())
        atomic_write_text(building / "meta.json", json.dumps(meta, indent=2) + "\n")
    return prepared


def load(data_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The prepared arrays and metadata (preparing them first if needed); checks the content hash."""
    prepared = prepare(Path(data_dir))
    path = prepared / "graphs.npz"
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in ARRAYS}
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(f"cannot read {path} ({exc}); delete {prepared} to rebuild it") from exc
    meta = _read_meta(prepared)
    if content_hash(arrays, meta["task_names"]) != meta["content_sha256"]:
        raise UserInputError(f"{path} does not match the hash in meta.json; delete {prepared} to rebuild it")
    return arrays, meta


def select_graphs(arrays: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The graphs `index` (in that order) as a new concatenated set with their own offsets."""
    no, eo = arrays["node_offsets"], arrays["edge_offsets"]
    n_nodes, n_edges = no[index + 1] - no[index], eo[index + 1] - eo[index]
    node_rows = _ranges(no[index], n_nodes)
    edge_rows = _ranges(eo[index], n_edges)
    return {
        "node_feat": arrays["node_feat"][node_rows],
        "edge_feat": arrays["edge_feat"][edge_rows],
        "edge_index": arrays["edge_index"][:, edge_rows],
        "node_offsets": np.concatenate([[0], np.cumsum(n_nodes)]).astype(np.int64),
        "edge_offsets": np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64),
        "labels": arrays["labels"][index],
    }


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) over (s, l)."""
    total = int(lengths.sum())
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + np.arange(total) - first
