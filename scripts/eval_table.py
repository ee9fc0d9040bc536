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
methods = ["bm25", "dense", "hybrid"]
print("| collection | queries | " + " | ".join(f"{m} nDCG@10 | {m} R@100" for m in methods) + " |")
print("|---|---:|" + "---:|---:|" * len(methods))
means = {m: [0.0, 0.0] for m in methods}
for name in sorted(rows):
    cells = []
    for m in methods:
        r = rows[name].get(m, {})
        cells += [f"{r.get('ndcg@10', float('nan')):.4f}", f"{r.get('recall@100', float('nan')):.4f}"]
        means[m][0] += r.get("ndcg@10", 0.0) / len(rows)
        means[m][1] += r.get("recall@100", 0.0) / len(rows)
    queries = next(iter(rows[name].values()))["queries"]
    print(f"| {name} | {queries} | " + " | ".join(cells) + " |")
mean_cells = (f"**{means[m][0]:.4f}** | **{means[m][1]:.4f}**" for m in methods)
print("| **mean** | | " + " | ".join(mean_cells) + " |")
