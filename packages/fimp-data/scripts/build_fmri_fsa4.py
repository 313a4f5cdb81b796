"""Rebuild ``fimp_data/embedded/fmri_fsa4.npz`` from the ``brainspace`` 0.3.0 wheel.

Source: brainspace's preprocessing-tutorial run
``brainspace/datasets/preprocessing/sub-010188_ses-02_task-rest_acq-AP_run-01.fsa5.{lh,rh}.mgz``
(resting-state BOLD sampled on the fsaverage5 surface, 10,242 vertices per hemisphere x 652
time points, demeaned per vertex; brainspace does not document where the run comes from) and the
fsaverage5 pial meshes ``brainspace/datasets/surfaces/fsa5.pial.{lh,rh}.gii``.

Processing (deterministic, numpy only besides nibabel for reading):

- Resolution: fsaverage meshes are nested icosahedral subdivisions, so the first 2,562 vertices of
  each fsaverage5 hemisphere are exactly the fsaverage4 vertices, and each later vertex is the
  midpoint of one fsaverage4 edge (adjacent to exactly two of the first 2,562; checked). The
  fsaverage4 mesh edges are therefore read off the fsaverage5 triangles: for every midpoint
  vertex, the pair of fsaverage4 vertices it touches (7,680 edges per hemisphere; checked).
- Nodes: the fsaverage4 vertices whose series is not constant (the medial wall is constant 0 in
  the source): 2,341 left + 2,346 right = 4,687. Edges: the fsaverage4 mesh edges between kept
  vertices, both directions, sorted by (target, source); none across hemispheres.
- Values: all 652 time points, stored as float16 (the source is float32 with |v| < 4; float16
  keeps a relative precision of 2^-11, i.e. < 0.002 absolute here) to fit the wheel budget; the
  reader returns float32. pos = pial coordinates (fsaverage space, mm), float32.

Usage::

    pip download --no-deps brainspace==0.3.0 -d /tmp/src
    python packages/fimp-data/scripts/build_fmri_fsa4.py /tmp/src/brainspace-0.3.0-py3-none-any.whl

Needs nibabel (the ``fimp-data[nifti]`` extra) to read the .mgz and .gii files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _embedded_common import SourceWheel, json_array, parse_args, report, write_npz_deterministic

PACKAGE, VERSION = "brainspace", "0.3.0"
RUN = "sub-010188_ses-02_task-rest_acq-AP_run-01"
BOLD = "brainspace/datasets/preprocessing/" + RUN + ".fsa5.{hemi}.mgz"
PIAL = "brainspace/datasets/surfaces/fsa5.pial.{hemi}.gii"
HEMIS = ("lh", "rh")
N_FSA5, N_FSA4, N_TIME = 10242, 2562, 652


def fsa4_edges(triangles: np.ndarray, n_coarse: int = N_FSA4, n_fine: int = N_FSA5) -> np.ndarray:
    """Undirected coarse-mesh edges ``[E, 2]`` (rows sorted, ``a < b``, lexicographic order) of
    a once-subdivided triangle mesh, from the fine mesh's ``triangles``.

    The fine mesh's first ``n_coarse`` vertices are the coarse vertices; every later vertex is the
    midpoint of one coarse edge and adjacent to exactly its two end points among them (fsaverage5
    over fsaverage4: 10,242 over 2,562 vertices). Anything else is refused."""
    tri = np.asarray(triangles, dtype=np.int64)
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    if ((e[:, 0] < n_coarse) & (e[:, 1] < n_coarse)).any():
        raise SystemExit("the fine mesh has an edge between two coarse vertices: not nested")
    cross = e[(e[:, 0] < n_coarse) & (e[:, 1] >= n_coarse)]  # (original, midpoint)
    order = np.lexsort((cross[:, 0], cross[:, 1]))
    cross = cross[order]
    mids, counts = np.unique(cross[:, 1], return_counts=True)
    if len(mids) != n_fine - n_coarse or not (counts == 2).all():
        raise SystemExit("a midpoint vertex does not touch exactly two coarse vertices")
    pairs = cross[:, 0].reshape(-1, 2)  # per midpoint (sorted), its two end points (sorted)
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    if len(pairs) != 3 * (n_coarse - 2):
        raise SystemExit(f"expected {3 * (n_coarse - 2)} coarse edges, got {len(pairs)}")
    return pairs


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], PACKAGE, VERSION, "fmri_fsa4.npz")
    import nibabel as nib

    src = SourceWheel(args.wheel, package=PACKAGE, version=VERSION)
    series, coords, hemi_ids, vertex_ids, edges = [], [], [], [], []
    offset = 0
    tr_ms = None
    with tempfile.TemporaryDirectory() as tmp:
        for h, hemi in enumerate(HEMIS):
            mgz = Path(tmp) / f"{hemi}.mgz"
            mgz.write_bytes(src.read(BOLD.format(hemi=hemi)))
            img = nib.load(mgz)
            bold = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[0], -1)
            zooms = img.header.get_zooms()
            tr_ms = float(zooms[3]) if len(zooms) > 3 else float("nan")
            gii = Path(tmp) / f"{hemi}.gii"
            gii.write_bytes(src.read(PIAL.format(hemi=hemi)))
            surf = nib.load(gii)
            xyz = np.asarray(surf.darrays[0].data, dtype=np.float64)
            tri = np.asarray(surf.darrays[1].data, dtype=np.int64)
            if bold.shape != (N_FSA5, N_TIME) or xyz.shape != (N_FSA5, 3):
                raise SystemExit(f"{hemi}: unexpected shapes bold {bold.shape}, pial {xyz.shape}")
            if not np.isfinite(bold).all() or np.abs(bold).max() >= 60000:
                raise SystemExit(f"{hemi}: BOLD not finite or out of float16 range")
            keep = np.flatnonzero(bold[:N_FSA4].std(axis=1) > 0)
            new_id = np.full(N_FSA4, -1, dtype=np.int64)
            new_id[keep] = np.arange(len(keep)) + offset
            pairs = fsa4_edges(tri)
            pairs = new_id[pairs]
            pairs = pairs[(pairs >= 0).all(axis=1)]
            edges.append(pairs)
            series.append(bold[keep])
            coords.append(xyz[keep])
            hemi_ids.append(np.full(len(keep), h, dtype=np.int8))
            vertex_ids.append(keep.astype(np.int32))
            offset += len(keep)
    und = np.concatenate(edges)
    directed = np.concatenate([und, und[:, ::-1]])  # (source, target) both ways
    directed = directed[np.lexsort((directed[:, 0], directed[:, 1]))]
    edge_index = np.ascontiguousarray(directed.T.astype(np.int32))
    bold = np.concatenate(series)
    provenance = src.provenance()
    provenance["processing"] = (
        "fsaverage4 = first 2,562 vertices of each fsaverage5 hemisphere (nested icosahedra), "
        "medial-wall (constant) vertices dropped; fsaverage4 mesh edges from the fsaverage5 "
        "triangles (midpoint rule), both directions, sorted by target; all 652 time points as "
        "float16; pial coordinates float32"
    )
    provenance["source_shape"] = [len(HEMIS), N_FSA5, N_TIME]
    arrays = {
        "bold": np.ascontiguousarray(bold.astype(np.float16)),
        "pos": np.ascontiguousarray(np.concatenate(coords).astype(np.float32)),
        "hemisphere": np.concatenate(hemi_ids),
        "hemisphere_names": np.array(HEMIS),
        "fsa5_vertex": np.concatenate(vertex_ids),
        "edge_index": edge_index,
        "subject": np.array(RUN.split("_")[0]),
        "run": np.array(RUN),
        "tr_header_ms": np.array(tr_ms, dtype=np.float32),
        "provenance": json_array(provenance),
    }
    sha = write_npz_deterministic(args.out, arrays)
    report(args.out, sha, provenance)


if __name__ == "__main__":
    main()
