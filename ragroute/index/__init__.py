"""Indexes: BM25 (exact rank-bm25 scores), dense (faiss), hybrid fusion, and their on-disk format."""
