"""HTTP routes of the arena (thin: the logic is in battles, votes and ratings)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[1] / "web"


def install(app: FastAPI) -> None:
    app.mount("/static/arena", StaticFiles(directory=WEB_DIR, check_dir=False), name="arena-static")
