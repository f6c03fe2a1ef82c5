"""The ASGI entry point uvicorn imports in each worker: settings from the environment."""

from __future__ import annotations

from fastapi import FastAPI

from router.app import create_app
from router.logging import configure_logging
from router.settings import Settings


def app_from_env() -> FastAPI:
    """uvicorn factory: read the environment once, configure logging, build the app."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
