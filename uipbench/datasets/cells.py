"""Surface cells as 2×2 integer transformations of the 1x1 fcc(111) cell, and the protocol slab in one.

Shared by the validation plan (:mod:`uipbench.datasets.validation`: its cycle of small cells), the search
problems (:mod:`uipbench.search.problem`: a card's ``surface_cell`` as a matrix) and the Cu oxide
(:mod:`uipbench.oxide`: the '8' cell).  The 1x1 cell is ASE's ``fcc111`` one, a 60° basis
(a1 = a_nn (1, 0), a2 = a_nn (1/2, √3/2)); a matrix ``((a, b), (c, d))`` makes the cell vectors
``a·a1 + b·a2`` and ``c·a1 + d·a2``, so a cell holds ``|ad − bc|`` metal atoms per layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import make_supercell

from .generate import make_slab
from .protocol import LATTICE_CONSTANTS, PROTOCOL_V1, ReferenceProtocol

Matrix = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class CellShape:
    """A surface cell as a 2×2 transformation of the 1x1 fcc(111) cell (60° basis), and its S counts
    (``max_sulfur``: what the validation plan places in it)."""

    name: str
    matrix: Matrix
    max_sulfur: int = 4

    @property
    def atoms_per_layer(self) -> int:
        return int(round(abs(np.linalg.det(np.array(self.matrix)))))


#: the '8' Cu oxide on Cu(111): |3 2; −1 2| of the 1x1 cell, eight 1x1 cells (Richter, Kim, Stampfl, Soon,
#: arXiv:1411.0276); its cell vectors are √19 and √3 nearest-neighbour distances long
OXIDE_8 = CellShape("oxide-8", ((3, 2), (-1, 2)), max_sulfur=0)


def matrix_determinant(matrix: Matrix) -> int:
    (a, b), (c, d) = matrix
    return a * d - b * c


def area_1x1(metal: str) -> float:
    """Area (Å²) of the 1x1 fcc(111) cell of ``metal`` at the protocol's lattice constant."""
    nearest = LATTICE_CONSTANTS[metal] / math.sqrt(2.0)
    return nearest * nearest * math.sqrt(3.0) / 2.0


def cell_area(metal: str, matrix: Matrix) -> float:
    """Area (Å²) of the surface cell ``matrix`` of ``metal``: |det| 1x1 cells."""
    return abs(matrix_determinant(matrix)) * area_1x1(metal)


def make_cell_slab(metal: str, cell: CellShape, protocol: ReferenceProtocol = PROTOCOL_V1) -> Atoms:
    """The protocol slab of ``metal`` in ``cell``: the 1x1 slab of :func:`make_slab`, transformed in-plane,
    atoms sorted bottom layer first."""
    base = make_slab(metal, 1, protocol)
    base.info.pop("adsorbate_info", None)
    (a, b), (c, d) = cell.matrix
    slab = make_supercell(base, np.array([[a, b, 0], [c, d, 0], [0, 0, 1]]), wrap=True)
    slab = slab[np.lexsort((slab.positions[:, 1], slab.positions[:, 0], np.round(slab.positions[:, 2], 3)))]
    slab.pbc = protocol.pbc
    return slab
