"""``mobilenets convert``: a weights file in another library's names, or ours, written in our format."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from ..weights import WEIGHTS_FILES, convert_weights


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``convert`` command's description and options to its parser."""
    parser.description = (
        f"Read a weights file ({WEIGHTS_FILES}, or 'pretrained'), fit it to a registered model strictly "
        "(every tensor used, every shape checked) and write it as .safetensors recording the model's name, "
        "arguments and preprocessing, so that --weights OUT needs no model name. Prints each tensor mapped "
        "(the file's name -> ours, shape). A file published in the catalogue (`mobilenets weights`) keeps its "
        "input size, normalisation, class names and provenance, and is checked against its SHA-256 where known. "
        "Nothing is downloaded."
    )
    parser.add_argument("source", metavar="SRC", help="the weights file to convert, or 'pretrained'")
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="registered model the weights are for (see `mobilenets list`); may be left out when SRC records it "
        "(a file from `mobilenets train`) or is a catalogue file (--catalogue, or its published file name)",
    )
    parser.add_argument(
        "--catalogue",
        metavar="WEIGHTS",
        help="the catalogue entry SRC is (see `mobilenets weights`; it gives the model): needed where the published "
        "file name is shared (timm's model.safetensors), else found by SRC's file name",
    )
    parser.add_argument("--out", metavar="OUT.safetensors", required=True, help="the file to write")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    model, mapping = convert_weights(args.source, args.out, args.model, entry=args.catalogue)
    print(tabulate(mapping, headers=("source tensor", "ours", "shape")))
    print(f"\nwrote {args.out}: {model.meta.name}, {len(mapping)} tensors")
    return 0
