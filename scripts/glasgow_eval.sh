#!/usr/bin/env bash
# Build BM25, dense and hybrid indexes for every Glasgow collection and evaluate them with
# `ragroute eval` on the dev split. Prints one JSON line per (method, collection) to stdout;
# scripts/eval_table.py turns those lines into the Markdown table in docs/benchmarks.md. The data is
# read strictly (--on-error raise, --strict): a bad line stops the script instead of being skipped.
#   usage: scripts/glasgow_eval.sh [DATA_ROOT] [BACKEND] > results.jsonl
set -euo pipefail
root=${1:-../shared/data/glasgow}
backend=${2:-auto}
if [ ! -d "$root" ]; then
  echo "data missing: $root (see ../shared/data/README.md)" >&2
  exit 2
fi
# the project's virtual environment when ragroute is not on PATH (the README's setup makes .venv)
if ! command -v ragroute >/dev/null; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  if [ -x "$here/.venv/bin/ragroute" ]; then
    PATH="$here/.venv/bin:$PATH"
  else
    echo "ragroute is not installed: run the README's setup (it makes .venv) first" >&2
    exit 2
  fi
fi
for dir in "$root"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/qrels/dev.tsv" ] || continue
  for method in bm25 dense hybrid; do
    out="indexes/glasgow/$method/$name"
    # BM25 needs no encoder: its commands refuse encoder options
    if [ "$method" = bm25 ]; then enc=(); else enc=(--backend "$backend" --cache-dir indexes/.cache); fi
    ragroute build "$dir" --out "$out" --method "$method" "${enc[@]}" --on-error raise >&2
    ragroute eval --index "$out" --data "$dir" --split dev "${enc[@]}" --strict --json | tail -n 1
  done
done
