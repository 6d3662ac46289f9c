"""Payment provider settings, from the environment only (`VOICEGW_...`).

Every field here is either a secret or travels with one, so unlike the gateway's settings there is
no TOML source: a config file never holds a payment key. A provider whose keys are missing is
simply not configured; its checkouts are refused and its webhook answers 503.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from yookassa.domain.common import SecurityHelper

Networks = Annotated[list[IPvAnyNetwork], NoDecode]


def _yookassa_networks() -> list[Any]:
    # The SDK's list, not a copy: when YooKassa adds addresses, upgrading the SDK is enough.
    return list(SecurityHelper.YOOKASSA_NETWORKS)


class PaymentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOICEGW_", extra="ignore", validate_default=True)

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    # Only for tests and fakes: the SDK's default is the real API.
    stripe_api_base: str | None = None

    yookassa_shop_id: str | None = None
    yookassa_secret_key: SecretStr | None = None
    yookassa_api_url: str | None = None
    # 54-FZ: a shop registered with a cash register needs a receipt with every payment.
    yookassa_receipt: bool = False
    # YooKassa's codes: vat_code 1 = "without VAT"; tax_system_code None = the shop's default.
    yookassa_vat_code: int = Field(default=1, ge=1, le=12)
    yookassa_tax_system_code: int | None = Field(default=None, ge=1, le=6)
    # YooKassa notifications carry no signature: only these source networks are believed.
    yookassa_allowed_networks: Networks = Field(default_factory=_yookassa_networks)
    # Peers whose X-Forwarded-For is believed (our own reverse proxies); empty = none.
    trusted_proxies: Networks = Field(default_factory=list)
    # Where providers send the customer back after paying, unless a request names its own URL.
    public_base_url: str | None = None

    @field_validator("yookassa_allowed_networks", "trusted_proxies", mode="before")
    @classmethod
    def _network_list(cls, value: Any) -> Any:
        """`a,b,c` or a JSON list, so a network list fits in one environment variable."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    @property
    def stripe_configured(self) -> bool:
        return bool(self.stripe_secret_key and self.stripe_webhook_secret)

    @property
    def yookassa_configured(self) -> bool:
        return bool(self.yookassa_shop_id and self.yookassa_secret_key)
