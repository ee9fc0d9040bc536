"""Time one-document adds and deletes on a BM25 index of a few tens of thousands of passages.

Usage: ``OMP_NUM_THREADS=1 python scripts/bm25_live_add.py ../shared/data/2wiki_corpus/corpus.jsonl``
(the corpus five times over under new ids: 30,595 passages for 2wiki). What docs/scaling.md
reports for BM25's incremental refits; it calls ``BM25Index.add`` / ``delete``, the code users run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ragroute.index.lexical import BM25Index
from ragroute.types import Document


def main(path: Path, copies: int = 5, changes: int = 10) -> None:
    if not path.is_file():
        sys.exit(f"data missing: {path} (see ../shared/data/README.md)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs = [
        Document(id=f"{c}-{i}", title=row.get("title", ""), text=row["text"])
        for c in range(copies)
        for i, row in enumerate(rows)
    ]
    index = BM25Index.build(docs[: -2 * changes])
    start = time.perf_counter()
    for doc in docs[-2 * changes : -changes]:
        index.add([doc])
    added = time.perf_counter()
    for doc in docs[-2 * changes : -changes]:
        index.delete([doc.id])
    done = time.perf_counter()
    print(
        f"{len(docs) - 2 * changes:,} documents: add {1000 * (added - start) / changes:.0f} ms/doc, "
        f"delete {1000 * (done - added) / changes:.0f} ms/doc"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/2wiki_corpus/corpus.jsonl"))
