"""A matrix of cells (topology variant x kernel) as one product: one directory holding a sub-directory per
cell and the aggregate files (matrix.json, junit.xml, kcidb.json, index.html), run in parallel, resumed,
sharded over machines and merged, compared with an earlier night."""
