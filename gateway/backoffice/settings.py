"""The back office's own settings: ``POSGW_WEB_*`` environment variables (the
shared ones, database and time zone, come from gateway.settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSGW_WEB_", extra="ignore")

    pool_max: int = Field(4, ge=1)  # its own small pool, beside the gateways'
    session_lifetime_s: int = Field(8 * 3600, gt=0)  # a session ends this long after logging in
    login_failures_max: int = Field(5, ge=1)  # wrong passwords or codes in a row that lock a user out
    lockout_s: float = Field(900.0, gt=0)  # how long a lock-out lasts
    login_attempts_per_minute: int = Field(20, ge=1)  # per client address, whatever the user name
    dashboard_poll_s: int = Field(5, ge=1)  # how often the dashboard's figures refresh
    dashboard_cache_s: float = Field(2.0, ge=0)  # its figures from the database, shared by every viewer this long
    # the gateways' /metrics, for the dashboard's throughput and latency (JSON list in the environment)
    gateway_metrics_urls: list[str] = ["http://127.0.0.1:9583/metrics"]
    gateway_metrics_interval_s: float = Field(2.0, ge=0)  # read them at most this often, whoever looks
