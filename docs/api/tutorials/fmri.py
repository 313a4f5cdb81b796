"""Tutorial (fMRI family): masked reconstruction of brain-region time series, then the benchmark.

Runs offline on the embedded ``fmri-hcp`` dataset (HCP resting-state BOLD of 7 subjects, 94 AAL2
regions x 1,200 TRs, region centres, a region graph), in well under a minute on a 2-core CPU.
Usage: ``python docs/api/tutorials/fmri.py [OUT]`` (OUT: where the benchmark records go;
default a temporary folder).
"""

import sys
import tempfile

import torch
import torch.nn.functional as F

import fimp
import fimp_data
from fimp.tokenizers import TimeSeriesPatchTokenizer
from fimp_bench.tasks import resolve_tasks
from fimp_bench.train import run_benchmark

torch.manual_seed(0)

# 1. Data: a list of PyG Data, one per subject (x = BOLD [regions, TRs], pos = region xyz)
subjects = fimp_data.load("fmri-hcp")
print(len(subjects), "subjects;", subjects[0])

# 2. Split by subject: no subject is in both train and test
split = fimp_data.group_split(subjects, val=0.0, test=0.3, seed=0)
print("train subjects", split.train.tolist(), "test subjects", split.test.tolist())

# 3. Tokens: a window of 200 TRs z-scored per region, cut into 10 patches of 20 samples
#    (BrainLM's tokens), plus the region's standardised xyz and the patch's time encoding
WINDOW, PATCH = 200, 20
pos = subjects[0].pos
coords = (pos - pos.mean(0)) / pos.std(0)


def window(data, start=0):
    w = data.x[:, start : start + WINDOW]
    return (w - w.mean(1, keepdim=True)) / w.std(1, keepdim=True)


def mask_patches(num_regions, generator):
    """20% of each region's patches hidden (True = masked, to be reconstructed)."""
    return torch.rand(num_regions, WINDOW // PATCH, generator=generator) < 0.2


tokenizer = TimeSeriesPatchTokenizer(32, patch_size=PATCH, coord_dim=3)
model = fimp.create_model("fimp_base", tokenizer=tokenizer, dim=32, heads=2, recon_out=PATCH)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)


def masked_loss(data, signal, mask):
    out = model(signal, data.edge_index, coords=coords, mask=mask)
    target = signal.view(signal.shape[0], -1, PATCH)  # [regions, patches, 20]
    return F.mse_loss(out["recon"][mask], target[mask]), out["recon"][mask], target[mask]


# 4. Train: each epoch, one window per training subject at a random offset, fresh masks
gen = torch.Generator().manual_seed(0)
for epoch in range(15):
    model.train()
    total = 0.0
    for s in split.train.tolist():
        start = int(torch.randint(0, subjects[s].x.shape[1] - WINDOW, (1,), generator=gen))
        signal = window(subjects[s], start)
        opt.zero_grad()
        loss, _, _ = masked_loss(subjects[s], signal, mask_patches(signal.shape[0], gen))
        loss.backward()
        opt.step()
        total += loss.item()
    if epoch % 5 == 4:
        print(f"epoch {epoch + 1}: training MSE {total / len(split.train):.3f}")

# 5. Test: R^2 = 1 - SS_res / SS_tot over all masked samples of the test subjects, pooled
model.eval()
preds, targets = [], []
with torch.no_grad():
    for s in split.test.tolist():
        signal = window(subjects[s])
        _, pred, target = masked_loss(subjects[s], signal, mask_patches(signal.shape[0], gen))
        preds.append(pred.flatten())
        targets.append(target.flatten())
pred, target = torch.cat(preds), torch.cat(targets)
r2 = 1 - ((pred - target) ** 2).sum() / ((target - target.mean()) ** 2).sum()
print(f"test R^2 on masked patches {r2.item():.3f} (0 = predicting the mean)")

# 6. The benchmark of the family (fmri-reconstruction) on the smoke preset; the same as:
#    fimp-bench run --task fmri --preset smoke --model mlp,gcn,fimp-base --seeds 0
out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="fimp-tutorial-")
records = run_benchmark(
    resolve_tasks("fmri"),
    ["mlp", "gcn", "fimp-base"],
    [0],
    preset="smoke",
    device="cpu",
    out=out,
    progress=False,
)
for r in records:
    print(r["task"], r["model"]["name"], {k: round(v, 3) for k, v in r["metrics"]["test"].items()})
print(f"records under {out}")
