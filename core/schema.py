"""Column names and Polars schemas of the data contract (CONTRACT.md sections 1 and 2), defined once."""

from __future__ import annotations

import polars as pl

# --- API request events (CONTRACT.md section 1) ---
EVENT_ID = "event_id"
TS = "ts"
ACCOUNT_ID = "account_id"
API_KEY_ID = "api_key_id"
ORG_ID = "org_id"
IP = "ip"
USER_AGENT = "user_agent"
MODEL = "model"
ENDPOINT = "endpoint"
PROMPT = "prompt"
SYSTEM_PROMPT_HASH = "system_prompt_hash"
PROMPT_TOKENS = "prompt_tokens"
COMPLETION_TOKENS = "completion_tokens"
STATUS = "status"
LATENCY_MS = "latency_ms"
# Unknown fields of a record, kept as a JSON object text (null when there were none).
EXTRA = "extra"

TS_DTYPE = pl.Datetime("ms", "UTC")

EVENT_SCHEMA: dict[str, pl.DataType] = {
    EVENT_ID: pl.String(),
    TS: TS_DTYPE,
    ACCOUNT_ID: pl.String(),
    API_KEY_ID: pl.String(),
    ORG_ID: pl.String(),
    IP: pl.String(),
    USER_AGENT: pl.String(),
    MODEL: pl.String(),
    ENDPOINT: pl.String(),
    PROMPT: pl.String(),
    SYSTEM_PROMPT_HASH: pl.String(),
    PROMPT_TOKENS: pl.Int64(),
    COMPLETION_TOKENS: pl.Int64(),
    STATUS: pl.Int64(),
    LATENCY_MS: pl.Int64(),
    EXTRA: pl.String(),
}
EVENT_REQUIRED = (EVENT_ID, TS, ACCOUNT_ID)
EVENT_STRING_FIELDS = (
    EVENT_ID,
    ACCOUNT_ID,
    API_KEY_ID,
    ORG_ID,
    IP,
    USER_AGENT,
    MODEL,
    ENDPOINT,
    PROMPT,
    SYSTEM_PROMPT_HASH,
)
EVENT_NONNEGATIVE_INT_FIELDS = (PROMPT_TOKENS, COMPLETION_TOKENS, LATENCY_MS)
EVENT_INT_FIELDS = (PROMPT_TOKENS, COMPLETION_TOKENS, STATUS, LATENCY_MS)
ID_MAX_CHARS = 128

# --- Account events (CONTRACT.md section 2) ---
TYPE = "type"
EMAIL_DOMAIN = "email_domain"
EMAIL_LOCAL_SHAPE = "email_local_shape"
PAYMENT_FINGERPRINT = "payment_fingerprint"
SIGNUP_IP = "signup_ip"
COUNTRY = "country"
KYC_STATUS = "kyc_status"
PLAN = "plan"

ACCOUNT_EVENT_TYPES = ("signup", "kyc_update", "payment_added", "profile_update")
KYC_STATUSES = ("none", "pending", "verified", "failed")

ACCOUNT_EVENT_SCHEMA: dict[str, pl.DataType] = {
    ACCOUNT_ID: pl.String(),
    TS: TS_DTYPE,
    TYPE: pl.String(),
    EMAIL_DOMAIN: pl.String(),
    EMAIL_LOCAL_SHAPE: pl.String(),
    PAYMENT_FINGERPRINT: pl.String(),
    SIGNUP_IP: pl.String(),
    COUNTRY: pl.String(),
    KYC_STATUS: pl.String(),
    ORG_ID: pl.String(),
    PLAN: pl.String(),
    EXTRA: pl.String(),
}
ACCOUNT_REQUIRED = (ACCOUNT_ID, TS, TYPE)
ACCOUNT_STRING_FIELDS = tuple(k for k, v in ACCOUNT_EVENT_SCHEMA.items() if v == pl.String() and k != EXTRA)

# Actions a decision can take, mildest first (CONTRACT.md section 3).
ACTIONS = ("allow", "throttle", "require_kyc", "block")
REPORT_SCHEMA_ID = "distillguard.report/v1"
TRUTH_SCHEMA_ID = "distillguard.truth/v1"
