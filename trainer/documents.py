"""Read a user's config file (JSON, YAML or TOML) safely: plain data only, never code."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from lrsweep.errors import InvalidInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published as tomli before it joined the standard library
    import tomli as tomllib


def read_document(path: str | os.PathLike[str], what: str, suffixes: tuple[str, ...]) -> object:
    """Parse `path` by its suffix (one of `suffixes`); problems name `what` and the file."""
    document_path = Path(path)
    if document_path.suffix not in suffixes:
        raise InvalidInputError(f"{what} {document_path} must end in {', '.join(suffixes)}")
    try:
        text = document_path.read_text()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {document_path}: {exc.strerror}") from exc
    try:
        if document_path.suffix == ".toml":
            return tomllib.loads(text)
        if document_path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:  # TOMLDecodeError and JSONDecodeError too
        first_line = str(exc).splitlines()[0]
        raise InvalidInputError(f"{what} {document_path} does not parse: {first_line}") from exc
