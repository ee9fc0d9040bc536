"""``ragroute inspect PATH``: what an artifact folder holds (family, kind, build, versions, files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import counted
from ragroute.cli.output import emit_json
from ragroute.display import terminal_text


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check every file's checksum, and read back what an index keeps in an external store "
    "(a Qdrant or LanceDB collection) to check it against what was saved.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as one JSON object.")
@click.option(
    "--clean",
    is_flag=True,
    help="First remove what killed builds left (temporary folders) and superseded builds no reader "
    "holds; refused while another process writes PATH.",
)
def inspect_command(path: Path, verify: bool, as_json: bool, clean: bool) -> None:
    """Show the published build of an index, trained router or other artifact, and check it."""
    from ragroute.route.trained import is_legacy_router
    from ragroute.store import open_snapshot

    legacy = is_legacy_router(path)
    if clean and legacy:  # until session 54: "nothing to clean ...: it holds no ragroute artifact", exit 2
        click.echo(f"cleaned {path}: nothing to clean (a 0.1 router folder keeps no builds)", err=True)
    elif clean:
        from ragroute.store.artifact import clean_artifact

        report = clean_artifact(path)
        click.echo(
            f"cleaned {path}: {counted(len(report.debris), 'leftover')} of killed builds, "
            f"{counted(len(report.builds), 'superseded build')} removed",
            err=True,
        )
    if legacy:
        _show_legacy_router(path, as_json)
        return
    snapshot = open_snapshot(path, verify=verify)
    manifest = snapshot.manifest
    _check_own_format(path, manifest)
    outside = False
    if verify and manifest.family == "index":
        from ragroute.index.io import verify_outside_contents

        outside = verify_outside_contents(path)
    if as_json:
        emit_json({"path": str(path), "build_path": str(snapshot.path), **manifest.to_dict()})
        return
    click.echo(terminal_text(f"{path}: {manifest.family} / {manifest.kind}  name={manifest.name or '-'}"))
    click.echo(
        f"  build {manifest.build} ({manifest.created}), format version {manifest.format_version}, "
        f"written by ragroute {manifest.library_version}" + ("  [0.1 layout]" if snapshot.legacy else "")
    )
    if manifest.encoder:
        # an index records the backend that encoded its documents; a gate or router only the model
        backend = manifest.encoder.get("backend")
        details = ", ".join([*([backend] if backend else []), f"dim {manifest.encoder.get('dim')}"])
        click.echo(f"  encoder: {manifest.encoder.get('model_id')} ({details})")
    elif manifest.params.get("base"):  # an expert: fine-tuned from this base model
        click.echo(f"  base encoder: {manifest.params['base']}")
    size = sum(int(f.get("bytes", 0)) for f in manifest.files.values())
    click.echo(
        f"  {counted(len(manifest.files), 'file')}, {size / 1e6:.2f} MB"
        + (", checksums verified" if verify else "")
        + (f", {manifest.kind} collection verified" if outside else "")
    )


def _check_own_format(path: Path, manifest: Any) -> None:
    """A trained router's or gate's own format (inside the manifest's params) as loading checks it:
    one a newer ragroute wrote (or another format) cannot be used here, so inspect must not call
    it fine."""
    from ragroute.gate import trained as gate
    from ragroute.route import trained as router

    if (manifest.family, manifest.kind) == (router.ARTIFACT_FAMILY, "trained"):
        router.check_router_settings(path, manifest.params)
    elif (manifest.family, manifest.kind) == (gate.ARTIFACT_FAMILY, "trained"):
        gate.check_gate_settings(path, manifest.params)


def _show_legacy_router(path: Path, as_json: bool) -> None:
    """What a 0.1 router folder holds, read as loading reads it (no checksums in that layout)."""
    from ragroute.route.trained import TrainedRouter

    settings = TrainedRouter.read_settings(path)
    if as_json:
        emit_json({"path": str(path), "family": "router", "layout": "0.1", **settings})
        return
    encoder = settings.get("encoder") or {}
    click.echo(f"{path}: router / trained ({settings.get('kind')})  [0.1 layout: router.json, no checksums]")
    click.echo(terminal_text(f"  routes: {', '.join(str(label) for label in settings.get('labels', []))}"))
    if encoder:
        click.echo(f"  encoder: {encoder.get('model_id')} (dim {encoder.get('dim')})")
    click.echo(f"  refit with `ragroute route fit ... --out {path}` to move it to the checksummed layout")
