"""``python -m datasets``: make, check and merge dataset folders (synth, backgrounds, stanford-cars, check,
merge)."""

from __future__ import annotations

import click

from edge.errors import PolyheadError
from edge.log import configure_logging
from train.defaults import DEFAULTS


class _KnownErrors(click.Group):
    """Turn the package's known errors into one-line click errors, never tracebacks."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except PolyheadError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}".lstrip(": ")) from None


@click.group(cls=_KnownErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Make and check polyhead dataset folders (images + labels.csv)."""
    configure_logging()


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (created).")
@click.option("--num-images", default=DEFAULTS.num_images, show_default=True, type=click.IntRange(min=10))
@click.option("--image-size", default=DEFAULTS.synth_size, show_default=True, type=click.IntRange(16, 1024),
              help="Side in pixels.")
@click.option("--holdout-combos", default=DEFAULTS.holdout_combos, show_default=True, type=click.IntRange(min=0),
              help="Make/type combinations kept out of train/val/test, in test_unseen only.")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, type=int)
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Processes [default: CPU count].")
@click.option("--contact-sheet", "contact_sheet_path", default=None, type=click.Path(dir_okay=False),
              help="Also write a PNG grid of samples here.")
def synth(out, num_images, image_size, holdout_combos, seed, workers, contact_sheet_path) -> None:
    """Draw the built-in synthetic cars (48 makes x 8 body types) into OUT."""
    from datasets.synth import contact_sheet, generate

    summary = generate(out, num_images=num_images, image_size=image_size, holdout_combos=holdout_combos,
                       seed=seed, workers=workers)
    click.echo(summary.format())
    if contact_sheet_path:
        path = contact_sheet(out, contact_sheet_path, max_bytes=300_000)
        click.echo(f"  contact sheet: {path}")


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (created).")
@click.option("--num-images", default=600, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", default=128, show_default=True, type=click.IntRange(16, 1024), help="Side in pixels.")
@click.option("--label", default="none", show_default=True, help="The 'nothing here' class, on every head.")
@click.option("--seed", default=1, show_default=True, type=int)
def backgrounds(out, num_images, image_size, label, seed) -> None:
    """Draw empty synthetic scenes labelled LABEL on every head: merge them into a dataset to train a
    'nothing here' class (docs/edge.md, empty scenes)."""
    from datasets.backgrounds import write_backgrounds

    click.echo(f"wrote {num_images} empty scenes labelled {label!r} to "
               f"{write_backgrounds(out, num_images, image_size, seed, label)}")


@main.command("stanford-cars")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write labels.csv into.")
@click.option("--merge-makes", multiple=True, metavar="FROM=TO",
              help='Merge makes, e.g. "AM General=HUMMER" (the paper\'s 48 makes). Repeatable.')
@click.option("--crop-bbox", is_flag=True, help="Crop each image to its bounding box (written into OUT/images).")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of each class's train images moved to val.")
@click.option("--copy", is_flag=True, help="Copy the images into OUT/images instead of pointing at ROOT.")
@click.option("--seed", default=0, show_default=True, type=int)
def stanford_cars(root, out, merge_makes, crop_bbox, val_fraction, copy, seed) -> None:
    """Import Stanford Cars from ROOT (devkit, cars_annos.mat or class-folder layout)."""
    from datasets.stanford_cars import import_stanford_cars, parse_merge_makes

    summary = import_stanford_cars(root, out, merge_makes=parse_merge_makes(merge_makes), crop_bbox=crop_bbox,
                                   val_fraction=val_fraction, copy=copy, seed=seed)
    click.echo(summary.format())


@main.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--allow-outside-paths", is_flag=True,
              help="Accept image paths that are absolute or leave the folder.")
def check(root, allow_outside_paths) -> None:
    """Validate a dataset folder: class counts, combinations, split sizes, bad files."""
    from datasets.folder import check as run_check

    report = run_check(root, allow_outside_paths=allow_outside_paths)
    click.echo(report.format())
    if not report.ok:
        raise SystemExit(1)


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (replaced atomically).")
@click.option("--copy", is_flag=True, help="Copy the images into OUT/images instead of referencing them in place.")
@click.option("--split", "split_policy", default="hash:80/10/10", show_default=True,
              help="Split of rows that have none: train, val, test or hash:TRAIN/VAL/TEST (by image content).")
@click.option("--allow-outside-paths", is_flag=True,
              help="Accept image paths that are absolute or leave a source folder.")
def merge(sources, out, copy, split_policy, allow_outside_paths) -> None:
    """Merge dataset folders SOURCES (heads may differ; missing heads become empty cells) into OUT."""
    from datasets.merge import merge_datasets

    summary = merge_datasets(sources, out, copy=copy, split_policy=split_policy,
                             allow_outside_paths=allow_outside_paths)
    click.echo(summary.format())


if __name__ == "__main__":
    main()
