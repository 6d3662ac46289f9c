from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Rounding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUNDING_UNSPECIFIED: _ClassVar[Rounding]
    ROUNDING_PER_SECOND: _ClassVar[Rounding]
    ROUNDING_PER_STARTED_MINUTE: _ClassVar[Rounding]
    ROUNDING_SIXTY_SIX: _ClassVar[Rounding]

class PaymentProvider(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_PROVIDER_UNSPECIFIED: _ClassVar[PaymentProvider]
    PAYMENT_PROVIDER_STRIPE: _ClassVar[PaymentProvider]
    PAYMENT_PROVIDER_YOOKASSA: _ClassVar[PaymentProvider]
ROUNDING_UNSPECIFIED: Rounding
ROUNDING_PER_SECOND: Rounding
ROUNDING_PER_STARTED_MINUTE: Rounding
ROUNDING_SIXTY_SIX: Rounding
PAYMENT_PROVIDER_UNSPECIFIED: PaymentProvider
PAYMENT_PROVIDER_STRIPE: PaymentProvider
PAYMENT_PROVIDER_YOOKASSA: PaymentProvider

class Money(_message.Message):
    __slots__ = ("amount_minor", "currency")
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount_minor: int
    currency: str
    def __init__(self, amount_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class CallAuthorization(_message.Message):
    __slots__ = ("call_id", "authorized_seconds", "granted_seconds", "plan_seconds", "held", "available", "plan_remaining_seconds", "replayed", "more_seconds")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PLAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    PLAN_REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    MORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    authorized_seconds: int
    granted_seconds: int
    plan_seconds: int
    held: Money
    available: Money
    plan_remaining_seconds: int
    replayed: bool
    more_seconds: int
    def __init__(self, call_id: _Optional[str] = ..., authorized_seconds: _Optional[int] = ..., granted_seconds: _Optional[int] = ..., plan_seconds: _Optional[int] = ..., held: _Optional[_Union[Money, _Mapping]] = ..., available: _Optional[_Union[Money, _Mapping]] = ..., plan_remaining_seconds: _Optional[int] = ..., replayed: _Optional[bool] = ..., more_seconds: _Optional[int] = ...) -> None: ...

class AuthorizeCallRequest(_message.Message):
    __slots__ = ("organization_id", "call_id", "seconds", "min_seconds", "idempotency_key")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    call_id: str
    seconds: int
    min_seconds: int
    idempotency_key: str
    def __init__(self, organization_id: _Optional[str] = ..., call_id: _Optional[str] = ..., seconds: _Optional[int] = ..., min_seconds: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class AuthorizeCallResponse(_message.Message):
    __slots__ = ("authorization",)
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    authorization: CallAuthorization
    def __init__(self, authorization: _Optional[_Union[CallAuthorization, _Mapping]] = ...) -> None: ...

class ExtendCallRequest(_message.Message):
    __slots__ = ("call_id", "seconds", "min_seconds", "usage_ms", "idempotency_key")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USAGE_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    seconds: int
    min_seconds: int
    usage_ms: int
    idempotency_key: str
    def __init__(self, call_id: _Optional[str] = ..., seconds: _Optional[int] = ..., min_seconds: _Optional[int] = ..., usage_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ExtendCallResponse(_message.Message):
    __slots__ = ("authorization",)
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    authorization: CallAuthorization
    def __init__(self, authorization: _Optional[_Union[CallAuthorization, _Mapping]] = ...) -> None: ...

class FinalizeCallRequest(_message.Message):
    __slots__ = ("call_id", "duration_ms", "end_reason", "idempotency_key")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    duration_ms: int
    end_reason: str
    idempotency_key: str
    def __init__(self, call_id: _Optional[str] = ..., duration_ms: _Optional[int] = ..., end_reason: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CallBill(_message.Message):
    __slots__ = ("call_id", "status", "duration_ms", "billed_seconds", "plan_seconds", "charged", "charged_late", "replayed", "created_at", "end_reason")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    BILLED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PLAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    CHARGED_LATE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    status: str
    duration_ms: int
    billed_seconds: int
    plan_seconds: int
    charged: Money
    charged_late: Money
    replayed: bool
    created_at: str
    end_reason: str
    def __init__(self, call_id: _Optional[str] = ..., status: _Optional[str] = ..., duration_ms: _Optional[int] = ..., billed_seconds: _Optional[int] = ..., plan_seconds: _Optional[int] = ..., charged: _Optional[_Union[Money, _Mapping]] = ..., charged_late: _Optional[_Union[Money, _Mapping]] = ..., replayed: _Optional[bool] = ..., created_at: _Optional[str] = ..., end_reason: _Optional[str] = ...) -> None: ...

class FinalizeCallResponse(_message.Message):
    __slots__ = ("bill",)
    BILL_FIELD_NUMBER: _ClassVar[int]
    bill: CallBill
    def __init__(self, bill: _Optional[_Union[CallBill, _Mapping]] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("organization_id",)
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    def __init__(self, organization_id: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("organization_id", "balance", "held", "available", "plan_code", "next_plan_code", "period_start", "included_seconds", "used_seconds", "held_seconds", "outstanding", "suspended")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    PLAN_CODE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PLAN_CODE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HELD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    balance: Money
    held: Money
    available: Money
    plan_code: str
    next_plan_code: str
    period_start: str
    included_seconds: int
    used_seconds: int
    held_seconds: int
    outstanding: Money
    suspended: bool
    def __init__(self, organization_id: _Optional[str] = ..., balance: _Optional[_Union[Money, _Mapping]] = ..., held: _Optional[_Union[Money, _Mapping]] = ..., available: _Optional[_Union[Money, _Mapping]] = ..., plan_code: _Optional[str] = ..., next_plan_code: _Optional[str] = ..., period_start: _Optional[str] = ..., included_seconds: _Optional[int] = ..., used_seconds: _Optional[int] = ..., held_seconds: _Optional[int] = ..., outstanding: _Optional[_Union[Money, _Mapping]] = ..., suspended: _Optional[bool] = ...) -> None: ...

class ListUsageRequest(_message.Message):
    __slots__ = ("organization_id", "page_size", "page_token")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    page_size: int
    page_token: str
    def __init__(self, organization_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsageResponse(_message.Message):
    __slots__ = ("calls", "next_page_token")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[CallBill]
    next_page_token: str
    def __init__(self, calls: _Optional[_Iterable[_Union[CallBill, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Plan(_message.Message):
    __slots__ = ("code", "monthly_fee", "included_seconds", "per_minute", "rounding")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_FEE_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    ROUNDING_FIELD_NUMBER: _ClassVar[int]
    code: str
    monthly_fee: Money
    included_seconds: int
    per_minute: Money
    rounding: Rounding
    def __init__(self, code: _Optional[str] = ..., monthly_fee: _Optional[_Union[Money, _Mapping]] = ..., included_seconds: _Optional[int] = ..., per_minute: _Optional[_Union[Money, _Mapping]] = ..., rounding: _Optional[_Union[Rounding, str]] = ...) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans",)
    PLANS_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    def __init__(self, plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ...) -> None: ...

class ChangePlanRequest(_message.Message):
    __slots__ = ("organization_id", "plan_code", "idempotency_key")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_CODE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    plan_code: str
    idempotency_key: str
    def __init__(self, organization_id: _Optional[str] = ..., plan_code: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ChangePlanResponse(_message.Message):
    __slots__ = ("plan_code", "next_plan_code", "period_start")
    PLAN_CODE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PLAN_CODE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    plan_code: str
    next_plan_code: str
    period_start: str
    def __init__(self, plan_code: _Optional[str] = ..., next_plan_code: _Optional[str] = ..., period_start: _Optional[str] = ...) -> None: ...

class CreateTopUpRequest(_message.Message):
    __slots__ = ("organization_id", "provider", "amount", "return_url", "plan_code", "receipt_email", "idempotency_key")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    RETURN_URL_FIELD_NUMBER: _ClassVar[int]
    PLAN_CODE_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_EMAIL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    provider: PaymentProvider
    amount: Money
    return_url: str
    plan_code: str
    receipt_email: str
    idempotency_key: str
    def __init__(self, organization_id: _Optional[str] = ..., provider: _Optional[_Union[PaymentProvider, str]] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., return_url: _Optional[str] = ..., plan_code: _Optional[str] = ..., receipt_email: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreateTopUpResponse(_message.Message):
    __slots__ = ("payment_id", "provider", "redirect_url", "amount")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_URL_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    provider: PaymentProvider
    redirect_url: str
    amount: Money
    def __init__(self, payment_id: _Optional[str] = ..., provider: _Optional[_Union[PaymentProvider, str]] = ..., redirect_url: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class AdjustBalanceRequest(_message.Message):
    __slots__ = ("organization_id", "amount", "reason", "idempotency_key")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    amount: Money
    reason: str
    idempotency_key: str
    def __init__(self, organization_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., reason: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class AdjustBalanceResponse(_message.Message):
    __slots__ = ("balance", "available", "replayed")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    balance: Money
    available: Money
    replayed: bool
    def __init__(self, balance: _Optional[_Union[Money, _Mapping]] = ..., available: _Optional[_Union[Money, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...
