"""fimp.interpret: attention maps of a trained FIMP, label aggregation, differences, edge picks.

Slow references: explicit loops over edges / tokens (aggregation), hidden states recomputed layer
by layer and FIMPConv's own ``return_attention_weights`` (maps), a hand-built AttentionMaps with
known values.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch_geometric.data import Data

import fimp
from fimp.errors import ConfigError, GraphError, NonFiniteError, ShapeError
from fimp.interpret import (
    AttentionMaps,
    EmptySelectionError,
    LabelMatrix,
    NotAFIMPModelError,
    UnmappedLabelError,
    aggregate_by_label,
    attention_maps,
    difference,
    edges_between,
    edges_within,
    iter_attention_maps,
)
from fimp.models import FIMP
from fimp.pretrained.two_stream import FeedForward, TransformerBlock, TwoStreamMessage
from fimp.tokenizers import GeneTokenizer, ImagePatchTokenizer, TimeSeriesPatchTokenizer


# ------------------------------------------------------------------ fixtures and references
def _gene_data(n: int = 14, g: int = 9, seed: int = 0) -> Data:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, g, generator=gen) * (torch.rand(n, g, generator=gen) > 0.35)
    x[0] = 0.0  # a cell with no expressed gene: no real token under selection="expressed"
    ei = torch.randint(0, n, (2, 4 * n), generator=gen)
    ei = torch.cat([ei, torch.tensor([[0, 1], [1, 0]])], dim=1)  # edges from / to the empty cell
    return Data(
        x=x,
        edge_index=ei,
        y=torch.arange(n) % 3,
        feature_names=[f"G{i}" for i in range(g)],
    )


def _gene_model(g: int = 9, *, selection: str = "expressed", layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    vocab = ["<cls>"] + [f"G{i}" for i in range(g)] + ["EXTRA"]
    tok = GeneTokenizer(vocab, 16, selection=selection, unknown="drop")
    model = fimp.create_model("fimp_base", tokenizer=tok, dim=16, heads=4, num_layers=layers)
    model.eval()
    return model


def _manual_hidden(model: FIMP, data: Data, layer: int):
    """Tokens and hidden states entering ``layer``, by FIMP.forward's definition."""
    tokens, mask, index = model.tokenizer(data.x, data.feature_names, return_index=True)
    h = tokens
    for i in range(layer):
        h = model.convs[i](h, data.edge_index, token_mask=mask)
        h = model.dropout(model.act(model.norms[i](h)))
    return h, mask, index


def ref_aggregate(maps: AttentionMaps, edges=None, group=None, reduce="mean", head="mean"):
    """Loops over edges, target tokens and source tokens; returns {(row, col): value}, weights."""
    names = maps.label_names
    lab = (lambda c: names[c]) if group is None else (lambda c: group[names[c]])
    mass: dict[tuple[str, str], float] = {}
    weight: dict[str, float] = {}
    for e in range(maps.num_edges):
        eid = int(maps.edge_id[e])
        if edges is not None and not bool(edges[eid]):
            continue
        j, i = int(maps.edge_index[0, e]), int(maps.edge_index[1, e])
        a = maps.attention[e].mean(0) if head == "mean" else maps.attention[e, head]
        src = [s for s in range(a.shape[1]) if maps.token_labels[j, s] >= 0]
        if not src:
            continue
        for t in range(a.shape[0]):
            ct = int(maps.token_labels[i, t])
            if ct < 0:
                continue
            weight[lab(ct)] = weight.get(lab(ct), 0.0) + 1.0
            for s in src:
                key = (lab(ct), lab(int(maps.token_labels[j, s])))
                mass[key] = mass.get(key, 0.0) + float(a[t, s])
    if reduce == "mean":
        mass = {k: v / weight[k[0]] for k, v in mass.items()}
    return mass, weight


def _check_against_ref(lm: LabelMatrix, ref: dict, weight: dict) -> None:
    assert set(lm.row_labels) == set(weight)
    for r, row in enumerate(lm.row_labels):
        assert lm.row_weight[r] == weight[row]
        for c, col in enumerate(lm.col_labels):
            assert float(lm.matrix[r, c]) == pytest.approx(ref.get((row, col), 0.0), abs=1e-9)
    assert set(k[1] for k in ref) <= set(lm.col_labels)


# ------------------------------------------------------------------ attention_maps
@pytest.mark.parametrize("layer", [0, 1, -1])
def test_maps_equal_fimpconv_attention_weights(layer: int) -> None:
    data = _gene_data()
    model = _gene_model()
    maps = attention_maps(model, data, layer=layer)
    h, mask, _ = _manual_hidden(model, data, layer % 2)
    with torch.no_grad():
        _, (ei, att) = model.convs[layer](
            h, data.edge_index, token_mask=mask, return_attention_weights=True
        )
    assert maps.layer == layer % 2
    assert torch.equal(maps.edge_index, ei) and torch.equal(maps.edge_id, torch.arange(ei.size(1)))
    assert maps.attention.shape == att.shape == (ei.size(1), 4, mask.size(1), mask.size(1))
    torch.testing.assert_close(maps.attention, att, atol=1e-6, rtol=1e-5)
    assert torch.equal(maps.token_mask, mask)
    assert not model.training


def test_maps_row_sums_masks_and_labels() -> None:
    data = _gene_data()
    model = _gene_model()
    maps = attention_maps(model, data)
    _, mask, index = _manual_hidden(model, data, 0)
    src, dst = maps.edge_index
    rows = maps.attention.sum(-1)  # [E, heads, L]
    live = mask[dst] & mask[src].any(-1, keepdim=True)
    torch.testing.assert_close(rows, live[:, None, :].expand_as(rows).float(), atol=1e-5, rtol=0)
    # padded source columns get nothing
    assert float(maps.attention.masked_select(~mask[src][:, None, None, :]).abs().sum()) == 0
    # edge 1 -> 0 (target without tokens) and 0 -> 1 (source without tokens): all zero
    assert float(maps.attention[-2:].abs().sum()) == 0
    # labels: the gene of each token (column names), -1 for padding
    for i in range(data.num_nodes):
        for t in range(mask.size(1)):
            code = int(maps.token_labels[i, t])
            if not mask[i, t]:
                assert code == -1
            else:
                assert maps.label_names[code] == data.feature_names[int(index[i, t])]


def test_edge_mask_and_chunks_give_the_same_maps() -> None:
    data = _gene_data()
    model = _gene_model()
    full = attention_maps(model, data)
    pick = torch.zeros(data.num_edges, dtype=torch.bool)
    pick[[3, 5, 11, 20, 40]] = True
    sub = attention_maps(model, data, edge_mask=pick)
    assert torch.equal(sub.edge_id, torch.tensor([3, 5, 11, 20, 40]))
    torch.testing.assert_close(sub.attention, full.attention[pick], atol=1e-6, rtol=1e-5)
    by_index = attention_maps(model, data, edge_mask=[40, 3, 5, 11, 20, 3])
    assert torch.equal(by_index.edge_id, sub.edge_id)
    chunked = attention_maps(model, data, edge_chunk_size=7)
    torch.testing.assert_close(chunked.attention, full.attention, atol=1e-6, rtol=1e-5)
    parts = list(iter_attention_maps(model, data, edge_chunk_size=7))
    assert [p.num_edges for p in parts] == [7] * 8 + [data.num_edges - 56]
    assert torch.is_grad_enabled()  # the generator does not leak no_grad to the caller
    per_edge = 4 * full.attention.shape[-1] ** 2 * 4  # heads * L * L * float32 bytes
    auto = list(
        iter_attention_maps(
            model, data, edge_chunk_size="auto", chunk_memory_mb=per_edge * 9 / 2**20
        )
    )
    assert [p.num_edges for p in auto][:-1] == [9] * (len(auto) - 1)
    torch.testing.assert_close(
        torch.cat([p.attention for p in auto]), full.attention, atol=1e-6, rtol=1e-5
    )


def test_cls_token_and_raw_features_input() -> None:
    data = _gene_data()
    torch.manual_seed(1)
    vocab = ["<cls>"] + [f"G{i}" for i in range(9)]
    tok = GeneTokenizer(vocab, 8, cls_token="<cls>")
    model = fimp.create_model("fimp_base", tokenizer=tok, dim=8, heads=2, num_layers=1)
    maps = attention_maps(model, data.x, edge_index=data.edge_index, genes=data.feature_names)
    assert maps.label_names[maps.token_labels[3, 0]] == "<cls>"
    assert [maps.label_names[c] for c in maps.token_labels[3, 1:]] == data.feature_names
    m, rows, cols = aggregate_by_label(maps)
    assert rows == cols == [*data.feature_names, "<cls>"]
    torch.testing.assert_close(m.sum(1), torch.ones(10, dtype=torch.float64))


def test_timeseries_and_image_labels() -> None:
    torch.manual_seed(0)
    n = 5
    ei = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    ts = TimeSeriesPatchTokenizer(8, patch_size=4, coord_dim=3)
    model = FIMP(ts, dim=8, num_layers=1, heads=2)
    data = Data(x=torch.randn(n, 12), pos=torch.randn(n, 3), edge_index=ei)
    maps = attention_maps(model, data)
    assert maps.label_names == ["t0:4", "t4:8", "t8:12"]
    m, rows, _ = aggregate_by_label(maps, head=1)
    assert rows == maps.label_names
    torch.testing.assert_close(m.sum(1), torch.ones(3, dtype=torch.float64))

    img = ImagePatchTokenizer(8, patch_size=4, in_chans=1, dim=8, class_token=True)
    model = FIMP(img, dim=8, num_layers=1, heads=2)
    maps = attention_maps(model, torch.randn(n, 1, 8, 8), edge_index=ei)
    assert maps.label_names == ["cls", "r0c0", "r0c1", "r1c0", "r1c1"]


def test_foundation_model_message_creator() -> None:
    torch.manual_seed(0)
    dim, heads = 8, 2

    def block() -> TransformerBlock:
        return TransformerBlock(
            dim,
            heads,
            q_proj=nn.Linear(dim, dim),
            k_proj=nn.Linear(dim, dim),
            v_proj=nn.Linear(dim, dim),
            out_proj=nn.Linear(dim, dim),
            norm1=nn.LayerNorm(dim),
            norm2=nn.LayerNorm(dim),
            mlp=FeedForward(nn.Linear(dim, 16), nn.Linear(16, dim)),
        )

    data = _gene_data()
    tok = GeneTokenizer([f"G{i}" for i in range(9)], dim, selection="expressed")
    model = FIMP(tok, dim=dim, num_layers=2, message=lambda i: TwoStreamMessage([block(), block()]))
    maps = attention_maps(model, data, layer=1)
    h, mask, _ = _manual_hidden(model, data, 1)
    with torch.no_grad():
        _, (_, att) = model.convs[1](
            h, data.edge_index, token_mask=mask, return_attention_weights=True
        )
    torch.testing.assert_close(maps.attention, att, atol=1e-6, rtol=1e-5)
    m, rows, _ = aggregate_by_label(maps)
    torch.testing.assert_close(m.sum(1), torch.ones(len(rows), dtype=torch.float64))


def test_maps_bad_input() -> None:
    data = _gene_data()
    model = _gene_model()
    with pytest.raises(NotAFIMPModelError, match="FIMP"):
        attention_maps(nn.Linear(3, 3), data)
    wrapper = nn.Module()
    wrapper.fimp = model
    with pytest.raises(NotAFIMPModelError, match=r"\.fimp"):
        attention_maps(wrapper, data)
    with pytest.raises(ConfigError, match="layer"):
        attention_maps(model, data, layer=2)
    with pytest.raises(ShapeError, match="edge_mask"):
        attention_maps(model, data, edge_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(GraphError, match="outside"):
        attention_maps(model, data, edge_mask=[0, data.num_edges])
    with pytest.raises(GraphError, match="edge_index"):
        attention_maps(model, data.x, genes=data.feature_names)
    with pytest.raises(ConfigError, match="edge_chunk_size"):
        attention_maps(model, data, edge_chunk_size=0)
    plain = FIMP(None, dim=8, num_layers=1, heads=2)  # inputs are tokens
    tokens = torch.randn(3, 4, 8)
    tokens[1, 2, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        attention_maps(plain, tokens, edge_index=torch.tensor([[0, 1], [1, 2]]))
    ok = attention_maps(plain, tokens.nan_to_num(), edge_index=torch.tensor([[0, 1], [1, 2]]))
    assert ok.label_names == ["token 0", "token 1", "token 2", "token 3"]


# ------------------------------------------------------------------ aggregation
def _hand_maps() -> AttentionMaps:
    """3 nodes, L = 2, 1 head. Node labels: n0 = (A, B), n1 = (B, pad), n2 = (A, C)."""
    att = torch.zeros(3, 1, 2, 2)
    att[0, 0] = torch.tensor([[0.25, 0.75], [0.5, 0.5]])  # 0 -> 2: target (A, C), source (A, B)
    att[1, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # 0 -> 1: target (B, pad)
    att[2, 0] = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # 1 -> 0: source (B, pad)
    return AttentionMaps(
        attention=att,
        edge_index=torch.tensor([[0, 0, 1], [2, 1, 0]]),
        edge_id=torch.arange(3),
        token_mask=torch.tensor([[True, True], [True, False], [True, True]]),
        token_labels=torch.tensor([[0, 1], [1, -1], [0, 2]]),
        label_names=["A", "B", "C"],
        layer=0,
        num_edges_total=3,
    )


def test_aggregate_known_values() -> None:
    maps = _hand_maps()
    m, rows, cols = aggregate_by_label(maps)
    assert rows == ["A", "B", "C"] and cols == ["A", "B"]
    # A rows: edge0 t0 (0.25 A, 0.75 B), edge2 t0 (1.0 B) -> mean (0.125, 0.875)
    # B rows: edge1 t0 (1.0 A), edge2 t1 (1.0 B) -> (0.5, 0.5); C: edge0 t1 -> (0.5, 0.5)
    expected = torch.tensor([[0.125, 0.875], [0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(m, expected)
    lm = aggregate_by_label(maps, reduce="sum")
    torch.testing.assert_close(lm.matrix, expected * torch.tensor([[2.0], [2.0], [1.0]]))
    torch.testing.assert_close(lm.row_weight, torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64))
    # groups: A, B -> "AB"; C -> "C"
    m, rows, cols = aggregate_by_label(maps, labels={"A": "AB", "B": "AB", "C": "C"})
    assert rows == ["AB", "C"] and cols == ["AB"]
    torch.testing.assert_close(m, torch.ones(2, 1, dtype=torch.float64))
    # edge selection: only edge 0
    m, rows, cols = aggregate_by_label(maps, edges=torch.tensor([True, False, False]))
    assert rows == ["A", "C"] and cols == ["A", "B"]
    torch.testing.assert_close(m, torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64))


@pytest.mark.parametrize("slice_elements", [None, 50])
def test_aggregate_matches_slow_reference_on_a_model(monkeypatch, slice_elements) -> None:
    if slice_elements is not None:  # aggregate in slices of one edge at a time
        monkeypatch.setattr(fimp.interpret, "_AGG_ELEMENTS", slice_elements)
    data = _gene_data(n=16, g=10, seed=3)
    model = _gene_model(g=10, seed=3)
    maps = attention_maps(model, data)
    names = maps.label_names
    group = {g: ("low" if i < 5 else "high") for i, g in enumerate(names)}
    sel = edges_between(data, data.y, 1, [0, 2])
    for kwargs in (
        {},
        {"edges": sel},
        {"reduce": "sum"},
        {"head": 2},
        {"head": -1, "edges": sel.nonzero().flatten()},
    ):
        lm = aggregate_by_label(maps, **kwargs)
        head = kwargs.get("head", "mean")
        head = head % 4 if head != "mean" else head
        edges = kwargs.get("edges")
        if edges is not None and edges.dtype != torch.bool:
            edges = torch.zeros(data.num_edges, dtype=torch.bool).index_fill_(0, edges, True)
        ref, weight = ref_aggregate(maps, edges, None, kwargs.get("reduce", "mean"), head)
        _check_against_ref(lm, ref, weight)
        if kwargs.get("reduce", "mean") == "mean":
            torch.testing.assert_close(
                lm.matrix.sum(1), torch.ones(len(lm.row_labels), dtype=torch.float64)
            )
    lm = aggregate_by_label(maps, labels=group)
    ref, weight = ref_aggregate(maps, None, group)
    _check_against_ref(lm, ref, weight)
    assert lm.row_labels == ["low", "high"]
    # a callable and a sequence give the same groups
    by_fn = aggregate_by_label(maps, labels=lambda g: group[g])
    by_seq = aggregate_by_label(maps, labels=[group[g] for g in names])
    torch.testing.assert_close(by_fn.matrix, lm.matrix)
    torch.testing.assert_close(by_seq.matrix, lm.matrix)
    # chunks streamed through the iterator give the same matrix
    streamed = aggregate_by_label(iter_attention_maps(model, data, edge_chunk_size=5), edges=sel)
    whole = aggregate_by_label(maps, edges=sel)
    torch.testing.assert_close(streamed.matrix, whole.matrix)
    assert streamed.row_labels == whole.row_labels and streamed.num_edges == whole.num_edges


def test_aggregate_labels_differ_between_cells() -> None:
    # top_k selection: each cell has its own genes; rows still sum to 1 over real source tokens
    data = _gene_data(n=16, g=10, seed=5)
    torch.manual_seed(0)
    tok = GeneTokenizer([f"G{i}" for i in range(10)], 8, selection="top_k", k=4)
    model = fimp.create_model("fimp_base", tokenizer=tok, dim=8, heads=2, num_layers=1)
    maps = attention_maps(model, data)
    per_cell = {tuple(sorted(int(c) for c in row if c >= 0)) for row in maps.token_labels}
    assert len(per_cell) > 3
    lm = aggregate_by_label(maps)
    ref, weight = ref_aggregate(maps)
    _check_against_ref(lm, ref, weight)
    torch.testing.assert_close(
        lm.matrix.sum(1), torch.ones(len(lm.row_labels), dtype=torch.float64)
    )


def test_aggregate_bad_input() -> None:
    maps = _hand_maps()
    with pytest.raises(ConfigError, match="reduce"):
        aggregate_by_label(maps, reduce="max")
    with pytest.raises(ConfigError, match="head"):
        aggregate_by_label(maps, head=1)
    with pytest.raises(ConfigError, match="head"):
        aggregate_by_label(maps, head="max")
    with pytest.raises(UnmappedLabelError, match="'C'"):
        aggregate_by_label(maps, labels={"A": "x", "B": "x"})
    with pytest.raises(ShapeError, match="one group per label"):
        aggregate_by_label(maps, labels=["x", "y"])
    with pytest.raises(ShapeError, match="edges"):
        aggregate_by_label(maps, edges=torch.ones(5, dtype=torch.bool))
    with pytest.raises(EmptySelectionError, match="no attention row"):
        aggregate_by_label(maps, edges=torch.zeros(3, dtype=torch.bool))
    sub = AttentionMaps(**{**maps.__dict__, "attention": maps.attention[:1]})
    sub.edge_index, sub.edge_id = maps.edge_index[:, :1], maps.edge_id[:1]
    with pytest.raises(EmptySelectionError, match="not computed"):
        aggregate_by_label(sub, edges=[0, 2])
    with pytest.raises(EmptySelectionError, match="empty"):
        aggregate_by_label([])


# ------------------------------------------------------------------ difference and edge picks
def test_difference_aligns_labels() -> None:
    a = LabelMatrix(
        torch.tensor([[0.25, 0.75], [1.0, 0.0]], dtype=torch.float64),
        ["A", "B"],
        ["A", "B"],
        torch.ones(2),
        1,
        "mean",
    )
    b = LabelMatrix(
        torch.tensor([[0.5, 0.5], [0.2, 0.8]], dtype=torch.float64),
        ["C", "A"],
        ["B", "C"],
        torch.ones(2),
        1,
        "mean",
    )
    m, rows, cols = difference(a, b)
    assert rows == ["A", "B", "C"] and cols == ["A", "B", "C"]
    assert m[0].tolist() == [0.25, 0.75 - 0.2, -0.8]
    assert all(math.isnan(v) for v in m[1:].flatten().tolist())
    same = difference(a, a)
    assert same.matrix.abs().max() == 0 and same.reduce == "difference"
    with pytest.raises(ConfigError, match="reduce"):
        difference(a, LabelMatrix(b.matrix, b.row_labels, b.col_labels, None, 1, "sum"))


def test_difference_of_edge_groups_on_a_model() -> None:
    data = _gene_data(n=16, g=10, seed=2)
    model = _gene_model(g=10, seed=2)
    maps = attention_maps(model, data)
    within = edges_within(data, "y")
    a = aggregate_by_label(maps, edges=within)
    b = aggregate_by_label(maps, edges=~within)
    d = difference(a, b)
    assert d.row_labels == a.row_labels  # every gene occurs on both sides here
    torch.testing.assert_close(d.matrix, a.matrix - b.matrix)
    torch.testing.assert_close(
        d.matrix.sum(1), torch.zeros(len(d.row_labels), dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_edges_between_and_within() -> None:
    ei = torch.tensor([[0, 1, 2, 3, 0], [1, 2, 3, 0, 0]])
    groups = ["a", "b", "a", "c"]
    data = Data(edge_index=ei, num_nodes=4, cell=torch.tensor([0, 1, 0, 2]))
    # target in a, source in b: edge 1 -> 2
    assert edges_between(data, groups, "a", "b").tolist() == [False, True, False, False, False]
    assert edges_between(data, groups, None, "a").tolist() == [True, False, True, False, True]
    assert edges_between(ei, groups, ["b", "c"]).tolist() == [True, False, True, False, False]
    assert edges_between(data, "cell", 0, {1, 2}).tolist() == [False, True, False, True, False]
    assert edges_within(data, groups).tolist() == [False, False, False, False, True]
    assert edges_within(data, "cell").tolist() == [False, False, False, False, True]
    with pytest.raises(ConfigError, match="no attribute"):
        edges_between(data, "missing", 0, 0)
    with pytest.raises(ShapeError, match="one group per node"):
        edges_between(data, ["a"], "a", "a")
