"""The one settings class, read from `DISTILLGUARD_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration; every component receives it (or a part of it), none reads the environment."""

    model_config = SettingsConfigDict(env_prefix="DISTILLGUARD_", env_file=None, extra="ignore")

    database_url: str = Field(
        default="sqlite:///distillguard.db",
        description="SQLAlchemy URL; SQLite file by default, postgresql+psycopg://... in production.",
    )
    data_dir: Path = Field(default=Path("distillguard-data"), description="Where models and demo data go.")
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    prompts_corpus: Path | None = Field(
        default=None, description="Real prompt corpus for the simulator (prompts.jsonl.gz)."
    )

    # Pipeline
    batch_size: int = Field(default=50_000, ge=1, description="Events per processing batch.")
    max_record_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Records larger than this are rejected as oversized."
    )
    tick_every: str = Field(default="15m", description="Detection tick in event time (Polars duration).")
    window_period: str = Field(default="1h", description="Volume feature window (Polars duration).")
    min_account_events: int = Field(
        default=5, ge=1, description="Accounts with fewer events are scored but never flagged."
    )
    contamination: float = Field(
        default=0.02, gt=0.0, lt=0.5, description="Expected outlier share used to calibrate the model."
    )
    flag_threshold: float = Field(
        default=0.9, gt=0.0, le=1.0, description="Combined score in [0, 1] at and above which to flag."
    )
    random_state: int = Field(default=42, description="Seed of the detector models.")

    # API
    api_host: str = Field(default="127.0.0.1")
    api_port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=False, description="Log as JSON lines instead of key=value text.")


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides taking precedence."""
    return Settings(**overrides)  # type: ignore[arg-type]
