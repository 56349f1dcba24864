"""Data: from files on disk to uint8 tensors. Nothing here trains, records or reports.

    layout         the LaMem layout (images/ + splits/*.txt), read strictly; LamemLayout
    datasets       opening a registered dataset plugin by name
    images         decoding images the same way everywhere; checking them before training
    transforms     the augmentation and evaluation transforms; normalisation on the device
    loader         seeded epoch order, workers, uint8 batches
    demo           the synthetic demo dataset, in the LaMem layout
    download       resumable, hash-checked downloads (what membench fetched, recorded per folder)
    archives       safe unpacking (no links, no bombs) and installing without overwriting
    feature_store  a persistent store of frozen outputs shared by splits, runs and commands
"""

from membench.data.layout import LamemLayout

__all__ = ["LamemLayout"]
