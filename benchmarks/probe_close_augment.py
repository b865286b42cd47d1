"""Ending without augmentation (Ultralytics' close_mosaic), probed on seed-basic-cnn-augmented.

From a trained run's kept model: EPOCHS more epochs of batch 16, Adam at LR and a fresh EMA (0.998),
either with the seeds' augmentation ("seed") or with flips alone ("clean"); the raw and EMA weights
are scored on cats-vs-dogs val (flip TTA, as the model predicts) after each epoch.

    python benchmarks/probe_close_augment.py RUN THREADS {clean|seed} LR EPOCHS
"""

import copy
import glob
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import shared_data
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from imgcls.augment import Augment, build_transform
from imgcls.data.decode import load_image
from imgcls.recipes import get_recipe
from imgcls.run import Run

torch.set_num_threads(int(sys.argv[2]))
arm, lr, epochs = sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
model0, spec = Run.open(sys.argv[1]).load_model()
root = shared_data("cats_vs_dogs")


def load(split):
    files = sorted(glob.glob(f"{root}/{split}/cat/*")) + sorted(glob.glob(f"{root}/{split}/dog/*"))
    n = len(files) // 2
    return torch.from_numpy(np.stack([load_image(f, (150, 150), 3, "squash") for f in files])).permute(
        0, 3, 1, 2
    ).contiguous(), torch.tensor([0] * n + [1] * n)


xt, yt = load("train")
xv, yv = load("val")
aug = get_recipe("seed-basic-cnn-augmented").augment if arm == "seed" else Augment(horizontal_flip=True)
tf = build_transform(aug, (150, 150))
model = copy.deepcopy(model0).to(memory_format=torch.channels_last)
ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.998))
opt = torch.optim.Adam(model.parameters(), lr, fused=True)
g = torch.Generator().manual_seed(0)
torch.manual_seed(0)


def val(m):
    m.eval()
    with torch.no_grad():
        o = torch.cat([m(xv[i : i + 200]) for i in range(0, len(xv), 200)])[:, 0]
    return ((o > 0).long() == yv).float().mean().item()


print(arm, lr, "start", val(model))
for ep in range(epochs):
    model.train()
    t0 = time.time()
    for idx in torch.randperm(len(yt), generator=g).split(16):
        x = torch.stack([tf(xt[i]) for i in idx.tolist()])
        out = model(x)[:, 0]
        loss = F.binary_cross_entropy_with_logits(out, yt[idx].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(model)
    print(
        arm,
        lr,
        ep + 1,
        "raw",
        round(val(model), 3),
        "ema",
        round(val(ema.module), 3),
        f"{time.time() - t0:.0f}s",
        flush=True,
    )
