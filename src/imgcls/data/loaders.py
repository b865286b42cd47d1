"""Batches straight from in-memory tensors (uint8 images or cached features): no per-epoch decoding.

`__getitems__` lets the DataLoader fetch a whole batch with one tensor index when no
augmentation runs; with augmentation each image gets its own random transform (v2, uint8).
The order of an epoch depends only on (seed, epoch) (`EpochShuffle`), so a run resumed at epoch k
sees the batches a run that never stopped saw.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class InMemoryImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.transform is None:
            return self.images[index], self.labels[index]
        return torch.stack([self.transform(self.images[i]) for i in indices]), self.labels[index]


class EpochShuffle(Sampler[int]):
    """A fresh random order every epoch, drawn from (seed, epoch) alone; Lightning calls `set_epoch`."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def _keep_batch(batch):
    return batch


def make_loader(
    inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, transform=None, seed: int = 0
) -> DataLoader:
    return DataLoader(
        InMemoryImages(inputs, labels, transform),
        batch_size=batch_size,
        sampler=EpochShuffle(len(labels), seed) if shuffle else None,
        collate_fn=_keep_batch,
        num_workers=0,  # the images are already in memory; workers would only copy them
    )
