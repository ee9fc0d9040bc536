"""Turn a checkout of a public catalogue repository into the SKILLS layout `ragroute bench skills` reads.

    python benchmarks/external_catalogues/export.py NAME CHECKOUT --out /tmp/ext/bench/NAME

NAME is one of the folders beside this script (each holds our hand-written ``queries.jsonl`` and
``qrels/test.tsv``); CHECKOUT is a clone of the source repository named in README.md, at the
commit named there. The catalogue is loaded exactly as ``ragroute skills build`` loads it
(``ragroute.skills.load_catalogue``), written as ``skills.jsonl`` (``Skill.to_record``), and the
queries and qrels are copied beside it. Every loader warning is printed; a qrels line naming a
skill the catalogue does not have is an error (exit status 2), so a changed checkout cannot give
silently wrong numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: name -> (repository, commit, path of the catalogue inside the checkout)
SOURCES: dict[str, tuple[str, str, str]] = {
    "anthropics-skills": ("anthropics/skills", "9d2f1ae187231d8199c64b5b762e1bdf2244733d", "."),
    "superpowers": ("obra/superpowers", "44c9b2d6e889982ac18c27d05a19fefe335194e1", "."),
    "instagram-swagger2": (
        "darklynx/swagger-api-collection",
        "77f53cbc782187f5a6a957161fb6665cc49135dc",
        "api/yaml/instagram.yaml",
    ),
    "openai-openapi3": (
        "openai/openai-openapi",
        "969556e2721e1e1892d67196949cc00bcdad1d3d",
        "openapi.yaml",
    ),
    # The server's tool definitions as its tests snapshot them (one MCP tool, JSON, per .snap file).
    "github-mcp": (
        "github/github-mcp-server",
        "64a49f34d076b6f5917dae1424521d43c7bcae84",
        "pkg/github/__toolsnaps__",
    ),
}


def checkout_commit(checkout: Path) -> str | None:
    """The checkout's HEAD commit, or None when it is not a git work tree."""
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def load(name: str, checkout: Path) -> Any:
    """The catalogue of NAME in CHECKOUT, read as the product reads it; prints its warnings."""
    from ragroute.skills import load_catalogue

    _repo, _commit, rel = SOURCES[name]
    catalogue = load_catalogue((checkout / rel).resolve())
    for line in catalogue.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return catalogue


def export(name: str, checkout: Path, out: Path) -> dict[str, Any]:
    """Write OUT/skills.jsonl, queries.jsonl, qrels/test.tsv and source.json; the summary."""
    repo, commit, rel = SOURCES[name]
    found = checkout_commit(checkout)
    if found is not None and found != commit:
        print(f"warning: {checkout} is at {found}, README.md's numbers are for {commit}", file=sys.stderr)
    catalogue = load(name, checkout)
    ids = {skill.id for skill in catalogue}
    qrels = HERE / name / "qrels" / "test.tsv"
    missing = sorted(
        {line.split("\t")[1] for line in qrels.read_text(encoding="utf-8").splitlines()[1:] if line} - ids
    )
    if missing:
        raise SystemExit(f"error: {qrels} names skills the catalogue lacks: {', '.join(missing)}")
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "skills.jsonl", "w", encoding="utf-8") as fh:
        for skill in catalogue:
            fh.write(json.dumps(skill.to_record(), ensure_ascii=False) + "\n")
    shutil.copyfile(HERE / name / "queries.jsonl", out / "queries.jsonl")
    shutil.copyfile(qrels, out / "qrels" / "test.tsv")
    summary = {
        "name": name,
        "repository": repo,
        "commit": found or commit,
        "path": rel,
        "kind": catalogue.kind,
        "skills": len(catalogue),
        "warnings": len(catalogue.warnings),
    }
    (out / "source.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(SOURCES))
    parser.add_argument("checkout", type=Path, help="a clone of the source repository (see README.md)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the SKILLS layout into")
    args = parser.parse_args(argv)
    summary = export(args.name, args.checkout, args.out)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
