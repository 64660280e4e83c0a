"""The one settings class, read from `DISTILLGUARD_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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
    public_text_senders: int | None = Field(
        default=None,
        ge=1,
        description="The public known-text rule: texts this many ordinary customers sent are known "
        "(DetectorConfig.public_text_senders); unset, the re-send rule.",
    )
    public_texts: Path | None = Field(
        default=None,
        description='JSON lines of public prompt texts ({"text": ...}: benchmark datasets) the detector knows '
        "as public from the start (DetectorConfig.public_texts).",
    )

    # API
    api_host: str = Field(default="127.0.0.1")
    api_port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=False, description="Log as JSON lines instead of key=value text.")

    # API: keys, rate limits, decisions (issue 5)
    api_rate_limit_per_second: float = Field(
        default=20.0, gt=0, description="Sustained requests/s per analyst or admin API key (token bucket)."
    )
    api_rate_limit_burst: int = Field(default=100, ge=1, description="Bucket size of analyst and admin keys.")
    platform_rate_limit_per_second: float = Field(
        default=2000.0, gt=0, description="Sustained requests/s per platform key (gateways ask per account)."
    )
    platform_rate_limit_burst: int = Field(default=4000, ge=1, description="Bucket size of platform keys.")
    api_key_refresh_seconds: float = Field(
        default=5.0, gt=0, description="How often the API reloads keys (revocations by other processes)."
    )
    decisions_refresh_seconds: float = Field(
        default=2.0, gt=0, description="How often the decision cache reloads changed rows from the database."
    )
    decisions_detector_ttl_seconds: int = Field(
        default=24 * 3600, ge=60, description="A detector decision expires this long after its alert last changed."
    )
    decisions_override_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=60, description="Default lifetime of an analyst override or ring action."
    )
    decisions_default_ttl_seconds: int = Field(
        default=300, ge=1, description="How long a gateway may cache an 'allow' for an account with no decision."
    )
    decisions_throttle_rpm: int = Field(default=60, ge=0, description="Requests per minute of a throttled account.")
    decisions_kyc_rpm: int = Field(
        default=0, ge=0, description="Requests per minute of an account that must complete KYC first."
    )
    decisions_kafka: bool = Field(
        default=False, description="Also produce every decision change to Kafka (topic account-decisions)."
    )
    suppression_days: int = Field(
        default=30, ge=1, le=365, description="Default suppression of an account after a false positive."
    )

    # KYC escalations (webhooks)
    kyc_webhook_urls: list[str] = Field(
        default_factory=list, description="KYC provider webhook endpoints (JSON list); seeded into the database."
    )
    kyc_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 secret of the endpoints in kyc_webhook_urls."
    )
    kyc_verified_ttl_seconds: int = Field(
        default=90 * 24 * 3600, ge=60, description="How long a KYC-verified account is allowed."
    )
    kyc_failed_ttl_seconds: int = Field(
        default=365 * 24 * 3600, ge=60, description="How long an account that failed KYC stays blocked."
    )
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, description="Per-attempt delivery timeout.")
    webhook_backoff_base_seconds: float = Field(
        default=5.0, gt=0, description="First retry delay; doubles on each failed attempt."
    )
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0, description="Longest retry delay.")
    webhook_max_attempts: int = Field(
        default=20, ge=1, description="Attempts before a delivery is parked as dead (still in the delivery log)."
    )
    webhook_poll_seconds: float = Field(default=1.0, gt=0, description="Delivery worker's idle poll interval.")
    webhook_lease_seconds: float = Field(
        default=60.0, gt=0, description="How long a worker owns a claimed delivery before another may retry it."
    )
    api_runtime_tuning: bool = Field(
        default=True,
        description="At API startup, keep long-lived objects out of cyclic GC and shorten the GIL switch "
        "interval (decision-lookup tail latency); process-wide, so tests turn it off.",
    )


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides taking precedence."""
    return Settings(**overrides)  # type: ignore[arg-type]
