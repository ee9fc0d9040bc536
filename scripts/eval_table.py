"""Turn the JSON lines of scripts/glasgow_eval.sh into a Markdown table (nDCG@10 / Recall@100)."""

import json
import sys
from pathlib import Path

rows: dict[str, dict[str, dict]] = {}
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        result = json.loads(line)
        rows.setdefault(Path(result["data"]).name, {})[result["kind"]] = result
if not rows:
    sys.exit("error: no result lines on stdin (did scripts/glasgow_eval.sh fail? see its stderr)")
methods = ["bm25", "dense", "hybrid"]
print("| collection | queries | " + " | ".join(f"{m} nDCG@10 | {m} R@100" for m in methods) + " |")
print("|---|---:|" + "---:|---:|" * len(methods))
for name in sorted(rows):
    cells = []
    for m in methods:
        r = rows[name].get(m, {})
        cells += [f"{r.get('ndcg@10', float('nan')):.4f}", f"{r.get('recall@100', float('nan')):.4f}"]
    queries = next(iter(rows[name].values()))["queries"]
    print(f"| {name} | {queries} | " + " | ".join(cells) + " |")


def mean(method: str, metric: str) -> str:
    """The macro mean over every collection, or n/a when a collection lacks the result."""
    values = [rows[name].get(method, {}).get(metric) for name in rows]
    return "n/a" if None in values else f"**{sum(values) / len(values):.4f}**"


mean_cells = (f"{mean(m, 'ndcg@10')} | {mean(m, 'recall@100')}" for m in methods)
print("| **mean** | | " + " | ".join(mean_cells) + " |")
