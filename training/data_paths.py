"""Where the training and evaluation data live: `--data`, else $SMEARSCOPE_DATA, else a checkout's ../shared/data.

The data sets are not part of the package (the TXL-PBC smears and the diabetes tables are tens of
megabytes and carry their own licences); a default that pointed inside an installed package would
send users looking in a virtualenv, so without a checkout and without the variable the error says
where to get them.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.contracts.errors import DataError

CHECKOUT = Path(__file__).resolve().parents[1]
HOW_TO_GET = ("get the data (TXL-PBC: arXiv:2407.13214, MIT licence; see the README's 'Data' section), then pass "
              "--data PATH or set SMEARSCOPE_DATA to the folder holding txl_pbc/ and diabetes/")


def data_root() -> Path | None:
    """$SMEARSCOPE_DATA, or ../shared/data beside a source checkout; None when neither exists."""
    env = os.environ.get("SMEARSCOPE_DATA")
    if env:
        return Path(env)
    beside = CHECKOUT.parent / "shared" / "data"
    if (CHECKOUT / "pyproject.toml").is_file() and beside.is_dir():
        return beside
    return None


def data_dir(name: str, given: Path | None = None) -> Path:
    """The folder of data set `name` (txl_pbc, diabetes): `given`, else under data_root(); DataError otherwise."""
    if given is not None:
        return Path(given)
    root = data_root()
    if root is None or not (root / name).is_dir():
        raise DataError(f"no {name} data found: {HOW_TO_GET}")
    return root / name
