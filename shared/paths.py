"""Where the project's files are: the catalogue, the data it keeps, its logs and caches.

Run from a checkout (the source tree, or an editable install of it), everything stays in the
checkout as it always has: `config/catalogue.yaml`, `data/`, `build/*-logs/`. Installed as a
wheel, the catalogue is the copy shipped inside the `shared` package, and data and logs go to
the user's data and cache folders (platformdirs: `~/.local/share/serverless-llm-arena`,
`~/.cache/serverless-llm-arena` on Linux). Models are cached in the user's cache folder either way.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import platformdirs

APP_NAME = "serverless-llm-arena"
SOURCE_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_CATALOGUE = SOURCE_ROOT / "config" / "catalogue.yaml"


def checkout_root() -> Path | None:
    """The source tree these packages run from, or None when they run from an installed wheel."""
    if (SOURCE_ROOT / "pyproject.toml").is_file() and CHECKOUT_CATALOGUE.is_file():
        return SOURCE_ROOT
    return None


def bundled_catalogue() -> Path:
    """The catalogue this code ships with: the checkout's `config/`, else the package's copy."""
    if checkout_root() is not None:
        return CHECKOUT_CATALOGUE
    return Path(str(resources.files("shared").joinpath("catalogue.yaml")))


def data_dir() -> Path:
    """Default home of what the fleet keeps (SQLite files)."""
    root = checkout_root()
    return root / "data" if root else platformdirs.user_data_path(APP_NAME)


def log_dir(kind: str) -> Path:
    """Default folder of one kind of process logs (`fleet`, `bench`, `runner`, `test`)."""
    root = checkout_root()
    return root / "build" / f"{kind}-logs" if root else platformdirs.user_cache_path(APP_NAME) / "logs" / kind


def cache_dir() -> Path:
    """The user's cache folder of this project (models, reassembled GGUF files)."""
    return platformdirs.user_cache_path(APP_NAME)
