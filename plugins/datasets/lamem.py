"""The `lamem` dataset: LaMem (Khosla, Raju, Torralba, Oliva: "Understanding and Predicting
Image Memorability at a Large Scale", ICCV 2015): 58,741 images, 5 random splits of
45,000 train / 3,741 val / 10,000 test, read from the layout of lamem.tar.gz."""

from __future__ import annotations

from membench import DatasetSpec, hookimpl

LAMEM_HUMAN_CONSISTENCY = 0.68  # split-half rank correlation reported by Khosla et al.


def open_lamem(root, options=None):
    from membench.data.layout import LamemLayout

    return LamemLayout(root, name="lamem", human_consistency=LAMEM_HUMAN_CONSISTENCY)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="lamem",
        open=open_lamem,
        summary="LaMem: 58,741 images, 5 splits of 45,000/3,741/10,000 (lamem.tar.gz layout)",
        citation="Khosla et al., Understanding and Predicting Image Memorability at a Large Scale, ICCV 2015",
        human_consistency=LAMEM_HUMAN_CONSISTENCY,
        size="58,741 images with scores (60,000 listed)",
        split_scheme="5 published splits of 45,000 / 3,741 / 10,000",
        score_measure="hit rate corrected for the delay between repeats (Khosla et al.)",
        consistency_note="0.68, published (Khosla et al. 2015)",
        license="not stated in the archive; see memorability.csail.mit.edu",
        homepage="http://memorability.csail.mit.edu/",
        options={},
    ))
