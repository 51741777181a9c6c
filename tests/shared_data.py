"""Where the real data lives: ../shared/data beside the checkout. Tests that read it skip when it is absent."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
