"""Settings: ``config/*.toml`` then ``POSGW_*`` environment variables (which win).

Every timeout, size and limit is a setting with its unit in its name.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def config_dir() -> Path:
    return Path(os.environ.get("POSGW_CONFIG_DIR", DEFAULT_CONFIG_DIR))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSGW_", extra="ignore")

    database_url: str | None = None
    data_dir: Path = Path("var")
    lmk: SecretStr | None = None
    config_dir: Path = DEFAULT_CONFIG_DIR

    host: str = "0.0.0.0"
    port: int = Field(8583, ge=0, le=65535)
    metrics_port: int = Field(9583, ge=0, le=65535)
    timezone: str = "Asia/Shanghai"
    acquirer_id: str = Field("00000001", pattern=r"^\d{1,11}$")

    frame_bytes_max: int = Field(2048, ge=21, le=65535)
    connections_max: int = Field(20000, ge=1)
    in_flight_max: int = Field(8, ge=1)
    idle_timeout_s: float = Field(300.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    write_buffer_bytes_max: int = Field(65536, ge=1024)
    shutdown_grace_s: float = Field(10.0, ge=0)
    tls_cert_file: Path | None = None  # both set: TLS on the terminal port
    tls_key_file: Path | None = None

    db_pool_min: int = Field(2, ge=1)
    db_pool_max: int = Field(16, ge=1)
    db_command_timeout_s: float = Field(10.0, gt=0)

    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    biller_timeout_s: float = Field(5.0, gt=0)
    float_low_threshold_fen: int = Field(10_000, ge=0)

    risk_enabled: bool = True
    # Terminals and cards kept in memory (each) for checks without a read (gateway.acquiring.context_cache); 0: none
    context_cache_entries: int = Field(100_000, ge=0)

    mac_failures_freeze_after: int = Field(5, ge=0)  # MAC failures in a row that freeze a terminal; 0: never
    request_timeout_s: float = Field(30.0, gt=0)  # a request not done by then: 96, or no answer (see processor)
    # Card transactions of WIRE.md 9.2 and 9.3
    refund_days_max: int = Field(180, ge=0)  # a refund's original at most this many local days old
    refund_returns_fee: bool = False  # a refund gives back the merchant discount on the refunded amount
    preauth_hold_days: int = Field(30, ge=1)  # a pre-authorization's hold expires after this many days
    completion_over_pct_max: int = Field(15, ge=0)  # a completion up to the hold plus this many percent
    payout_min_fen: int = Field(100, ge=0)  # a balance below this waits for a later payout run (0: any)
    payer_name: str = Field("posgw", min_length=1, max_length=140)  # the payer of payout files (pain.001 Dbtr)
    payer_account: str = Field("0000000000000000", pattern=r"^[A-Za-z0-9]{1,34}$")  # its account (DbtrAcct)
    payer_bank_code: str = Field("000000000000", pattern=r"^[A-Za-z0-9]{1,35}$")  # its bank's CNAPS code (DbtrAgt)
    biller_connections_max: int = Field(10, ge=1)  # HTTP connections kept open per biller (http connector)
    saf_poll_interval_s: float = Field(1.0, gt=0)  # the biller outbox's forwarder looks for due messages this often
    saf_batch_max: int = Field(32, ge=1)  # messages one forwarder claims and sends at once
    saf_backoff_base_s: float = Field(1.0, gt=0)  # wait after a message's first failed attempt, doubling after each
    saf_backoff_max_s: float = Field(300.0, gt=0)  # ... up to this
    saf_age_alert_s: float = Field(3600.0, gt=0)  # a message still unacknowledged this old: security_alert
    voucher_days_max: int = Field(365, ge=1)  # a voucher unredeemed this many days after its sale: expired
    # The agent network (CLI.md "Agent network"); 0 switches a charge off.
    activation_volume_fen: int = Field(1_000_000, ge=0)  # a bound terminal's volume that activates it
    activation_window_days: int = Field(30, ge=1)  # ... within this many local days from its binding day
    deposit_fen: int = Field(9_900, ge=0)  # the deposit (押金) charged on a terminal's first purchase
    deposit_refund_volume_fen: int = Field(15_000_000, ge=0)  # volume that refunds it ...
    deposit_refund_window_days: int = Field(90, ge=1)  # ... within this many local days
    service_fee_fen: int = Field(4_800, ge=0)  # the yearly service fee (流量费) of a bound terminal
    service_fee_free_days: int = Field(30, ge=0)  # first charged this many days after binding
    withdrawal_min_fen: int = Field(10_000, ge=0)  # an agent's withdrawal at least this (gross)
    withdrawal_tax_bp: int = Field(800, ge=0, le=10_000)  # tax withheld from a withdrawal, half up
    withdrawal_fee_fen: int = Field(300, ge=0)  # fee withheld from a withdrawal
    # Tests and demonstrations only: every process's clock shifted by this (CLI.md "Time").
    clock_offset_s: float = 0.0

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value

    @model_validator(mode="after")
    def _tls_cert_and_key_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both for TLS, or neither")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def now(self) -> datetime:
        """This process's clock: the time now, shifted by ``clock_offset_s`` (CLI.md, "Time")."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)

    def today(self) -> date:
        """The local day (setting ``timezone``) of :meth:`now`."""
        return self.now().astimezone(self.tz).date()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_dir() / "gateway.toml")
        return (init_settings, env_settings, toml)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
