"""Batches straight from in-memory tensors (uint8 images or cached features): no per-epoch decoding.

`__getitems__` lets the DataLoader fetch a whole batch with one tensor index when no
augmentation runs; with augmentation each image gets its own random transform (v2, uint8).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


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


def _keep_batch(batch):
    return batch


def make_loader(
    inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, transform=None, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        InMemoryImages(inputs, labels, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=_keep_batch,
        num_workers=0,  # the images are already in memory; workers would only copy them
    )
