"""Stand-in for torch_sparse (reference environment only): the SparseTensor subset fairchem's GemNet-OC uses.

GemNet-OC builds its triplet and quadruplet indices from adjacency matrices
in COO form that may hold several entries for one (row, col) pair (periodic
images): construction sorts entries by (row, col), stably; indexing with a
tensor of row numbers stacks those rows in that order; ``coo()``,
``storage.row()/col()/value()``, ``sparse_sizes()`` and ``set_value_`` read
and replace the entries.
"""

from __future__ import annotations

import torch


class SparseStorage:
    def __init__(self, row: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None, sizes: tuple[int, int]):
        self._row, self._col, self._value, self.sizes = row, col, value, sizes

    def row(self) -> torch.Tensor:
        return self._row

    def col(self) -> torch.Tensor:
        return self._col

    def value(self) -> torch.Tensor | None:
        return self._value

    def rowptr(self) -> torch.Tensor:
        counts = torch.bincount(self._row, minlength=self.sizes[0])
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class SparseTensor:
    def __init__(self, row: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None = None,
                 sparse_sizes: tuple[int, int] | None = None, is_sorted: bool = False):
        if sparse_sizes is None:
            sparse_sizes = (int(row.max()) + 1 if row.numel() else 0, int(col.max()) + 1 if col.numel() else 0)
        sparse_sizes = (int(sparse_sizes[0]), int(sparse_sizes[1]))
        if not is_sorted:
            order = torch.argsort(row * sparse_sizes[1] + col, stable=True)
            row, col = row[order], col[order]
            value = value[order] if value is not None else None
        self.storage = SparseStorage(row, col, value, sparse_sizes)

    def sparse_sizes(self) -> tuple[int, int]:
        return self.storage.sizes

    def coo(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self.storage.row(), self.storage.col(), self.storage.value()

    def set_value_(self, value: torch.Tensor, layout: str | None = None) -> "SparseTensor":
        if value.shape[0] != self.storage.row().shape[0]:
            raise ValueError(f"torch_sparse stand-in: {value.shape[0]} values for {self.storage.row().shape[0]} entries")
        self.storage._value = value
        return self

    def __getitem__(self, rows: torch.Tensor) -> "SparseTensor":
        if not isinstance(rows, torch.Tensor) or rows.dtype != torch.long or rows.dim() != 1:
            raise NotImplementedError("torch_sparse stand-in: only indexing with a 1-d tensor of row numbers")
        rowptr = self.storage.rowptr()
        starts = rowptr[rows]
        lengths = rowptr[rows + 1] - starts
        total = int(lengths.sum())
        new_row = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
        offsets = torch.arange(total, device=rows.device) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        positions = torch.repeat_interleave(starts, lengths) + offsets
        value = self.storage.value()
        return SparseTensor(
            new_row,
            self.storage.col()[positions],
            value[positions] if value is not None else None,
            (rows.numel(), self.storage.sizes[1]),
            is_sorted=True,
        )
