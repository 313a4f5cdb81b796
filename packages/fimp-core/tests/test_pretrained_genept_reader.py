"""GenePT file reading: both real pickle formats, the .npz conversion, bad files, hostile pickles."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from fimp.errors import CheckpointError, UnknownGeneError
from fimp.pretrained.genept import (
    GenePTEmbeddings,
    UnsafePickleError,
    convert_genept,
    read_genept,
)

DIM = 1536


def _genept_dict(values: str = "ndarray") -> dict:
    """A tiny GenePT-like dict exactly as the upstream notebook builds it (plus a zero vector)."""
    rng = np.random.default_rng(0)
    d = {}
    for gene in ("ACTB", "GAPDH", "CD3E"):
        vec = rng.standard_normal(DIM)  # float64, shape (1536,), like the OpenAI embedding
        d[gene] = vec if values == "ndarray" else [float(v) for v in vec]
    d["NOSUMMARY1"] = np.zeros(DIM) if values == "ndarray" else [0.0] * DIM
    return d


def _write(path: Path, obj, protocol: int | None = None) -> Path:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5, None])
def test_ndarray_pickle_loads(tmp_path, protocol):
    d = _genept_dict("ndarray")
    emb = read_genept(_write(tmp_path / "GPT_3_5_gene_embeddings.pickle", d, protocol))
    assert isinstance(emb, GenePTEmbeddings)
    assert emb.genes == tuple(d)
    assert emb.vectors.dtype == torch.float32 and emb.vectors.shape == (4, DIM)
    for i, g in enumerate(d):
        np.testing.assert_allclose(emb.vectors[i].numpy(), np.asarray(d[g], dtype=np.float32))
    assert torch.count_nonzero(emb.vectors[3]) == 0  # zero vector kept as is


def test_list_pickle_loads_and_matches_ndarray(tmp_path):
    a = read_genept(_write(tmp_path / "a.pickle", _genept_dict("ndarray")))
    b = read_genept(_write(tmp_path / "b.pickle", _genept_dict("list")), dim=DIM)
    assert a.genes == b.genes
    torch.testing.assert_close(a.vectors, b.vectors, rtol=0, atol=0)


def test_numpy1_module_names_and_numpy_scalars(tmp_path):
    # numpy < 2 writes numpy.core.multiarray._reconstruct; lists may hold np.float64 scalars
    raw = pickle.dumps({"ACTB": np.arange(4.0)}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    p = tmp_path / "np1.pickle"
    p.write_bytes(raw)
    emb = read_genept(p)
    assert emb.vectors.tolist() == [[0.0, 1.0, 2.0, 3.0]]
    emb2 = read_genept(_write(tmp_path / "s.pickle", {"X": list(np.arange(3.0))}))
    assert emb2.vectors.tolist() == [[0.0, 1.0, 2.0]]


def test_npz_conversion_roundtrip(tmp_path):
    src = _write(tmp_path / "g.pickle", _genept_dict("ndarray"))
    out = convert_genept(src, tmp_path / "conv" / "genept.npz")
    assert out.is_file() and not list(out.parent.glob("*.tmp"))
    a, b = read_genept(src), read_genept(out)
    assert a.genes == b.genes
    torch.testing.assert_close(a.vectors, b.vectors, rtol=0, atol=0)
    with np.load(out, allow_pickle=False) as z:  # pickle-free
        assert set(z.files) == {"genes", "embeddings"}


def test_lookup_missing_genes(tmp_path):
    emb = read_genept(_write(tmp_path / "g.pickle", _genept_dict("ndarray")))
    with pytest.raises(UnknownGeneError) as info:
        emb.lookup(["ACTB", "NOT_A_GENE", "ALSO_MISSING"])
    assert "NOT_A_GENE" in str(info.value) and "ALSO_MISSING" in str(info.value)
    assert "missing='drop'" in str(info.value)
    vecs, kept = emb.lookup(["CD3E", "NOT_A_GENE", "ACTB"], missing="drop")
    assert kept == ["CD3E", "ACTB"]
    torch.testing.assert_close(vecs, emb.vectors[[2, 0]])
    vecs, kept = emb.lookup(["NOT_A_GENE", "GAPDH"], missing="zero")
    assert kept == ["NOT_A_GENE", "GAPDH"]
    assert torch.count_nonzero(vecs[0]) == 0
    torch.testing.assert_close(vecs[1], emb.vectors[1])


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([np.zeros(DIM)], "dict gene -> vector"),
        ({1: np.zeros(DIM)}, "keys must be gene"),
        ({"A": np.zeros(DIM), "B": np.zeros(DIM - 1)}, "expected 1536"),
        ({"A": np.full(DIM, np.nan)}, "NaN"),
        ({"A": "not a vector"}, "expected a numpy array"),
        ({"A": ["x"] * 3}, "non-numeric"),
        ({"A": np.array(["a", "b"], dtype=object)}, "dtype"),
        ({}, "empty"),
    ],
)
def test_bad_content_is_refused(tmp_path, obj, match):
    with pytest.raises(CheckpointError, match=match):
        read_genept(_write(tmp_path / "bad.pickle", obj))


def test_wrong_dim_and_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="expected 3072"):
        read_genept(_write(tmp_path / "g.pickle", _genept_dict("list")), dim=3072)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_genept(tmp_path / "nope.pickle")
    bad = tmp_path / "trunc.pickle"
    bad.write_bytes(pickle.dumps(_genept_dict("ndarray"))[:100])
    with pytest.raises(CheckpointError):
        read_genept(bad)


# --- hostile pickles: each would create `marker` if it were executed --------------------------


class _SystemExploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class _SubprocessExploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


class _NumpyLookalike:
    """A __reduce__ that smuggles os.system next to a real numpy array."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    ("kind", "global_name"),
    [
        ("system", "posix.system" if os.name == "posix" else "nt.system"),
        ("eval", "builtins.eval"),
        ("subprocess", "subprocess.call"),
        ("nested", "system"),
    ],
)
def test_hostile_pickles_are_refused_and_never_run(tmp_path, kind, global_name):
    marker = tmp_path / "marker"
    if kind == "system":
        obj = _SystemExploit(marker)
    elif kind == "eval":
        obj = _EvalExploit(marker)
    elif kind == "subprocess":
        obj = _SubprocessExploit(marker)
    else:  # exploit hidden as the value of one gene, after a genuine entry
        obj = {"ACTB": np.zeros(DIM), "EVIL": _NumpyLookalike(marker)}
    path = _write(tmp_path / "GPT_3_5_gene_embeddings.pickle", obj)
    assert global_name.encode().split(b".")[-1] in path.read_bytes()
    with pytest.raises(UnsafePickleError, match="refusing to unpickle") as info:
        read_genept(path)
    assert global_name in str(info.value)
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, ValueError)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError):
        convert_genept(path, tmp_path / "x.npz")
    assert not marker.exists() and not (tmp_path / "x.npz").exists()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_numpy_subclass_and_object_scalars_are_refused(tmp_path):
    # a subclass needs its own global, refused by name
    p = _write(tmp_path / "sub.pickle", {"A": np.asmatrix(np.zeros(3))})
    with pytest.raises(UnsafePickleError, match="matrix"):
        read_genept(p)
    # _reconstruct asked to build anything but ndarray: refused
    raw = pickle.dumps({"A": np.zeros(3)}, protocol=2)
    assert b"numpy\nndarray\n" in raw
    p1 = tmp_path / "recon.pickle"
    p1.write_bytes(raw.replace(b"numpy\nndarray\n", b"numpy\ndtype\n", 1))
    with pytest.raises(UnsafePickleError, match="only ndarray"):
        read_genept(p1)
    # numpy's scalar() with an object dtype could return arbitrary objects: refused
    raw = pickle.dumps({"A": [np.float64(1.0)]}, protocol=2).replace(b"f8", b"O8")
    p2 = tmp_path / "objscalar.pickle"
    p2.write_bytes(raw)
    with pytest.raises((UnsafePickleError, CheckpointError)):
        read_genept(p2)
