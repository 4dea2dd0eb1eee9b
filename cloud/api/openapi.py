"""The OpenAPI 3.0 document of ``/api/v1``, written as data.

Kept beside the views and checked against them by schemathesis
(``tests/integration/test_api_schemathesis.py``): every documented
operation is called with generated requests, and every response must match
what is written here (status, content type, body schema).
"""

from __future__ import annotations

from typing import Any

VERSION = "1.0.0"

NULL_STR = {"type": "string", "nullable": True}
NULL_NUM = {"type": "number", "nullable": True}
NULL_INT = {"type": "integer", "nullable": True}
TIME = {"type": "string", "format": "date-time", "nullable": True}


NULL_DATE = {"type": "string", "format": "date", "nullable": True}
# Calendar dates in the customer's zone; the contract ends at the end of
# contract_end (inclusive) or, with a cancellation notice, at the end of
# that month (notice by the 15th) or of the next (from the 16th).
CONTRACT_DATES = {
    "contract_start": NULL_DATE,
    "contract_end": NULL_DATE,
    "cancellation_notice_on": NULL_DATE,
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
    }


def _page(item: str) -> dict[str, Any]:
    return _obj({"items": {"type": "array", "items": _ref(item)}, "next_cursor": NULL_STR})


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad request",
        401: "No or invalid bearer token",
        403: "Role may not do this",
        404: "No such object (or another customer's)",
        409: "Conflict",
        422: "Rejected by a rule",
        502: "The broker did not take the config",
    }
    return {
        str(code): {"$ref": f"#/components/responses/E{code}"} for code in codes if code in text
    }


def _param(
    name: str, where: str, schema: dict[str, Any], required: bool = False, description: str = ""
) -> dict[str, Any]:
    p = {"name": name, "in": where, "required": required or where == "path", "schema": schema}
    if description:
        p["description"] = description
    return p


TID = _param("tid", "path", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"})
ID = {"type": "integer", "minimum": 1, "maximum": 2147483647}
ALARM_ID = _param("alarm_id", "path", ID)
TARGET_ID = _param("target_id", "path", ID)
ENDPOINT_ID = _param("endpoint_id", "path", ID)
RULE_ID = _param("rule_id", "path", ID)
COMMAND_ID = _param("command_id", "path", ID)
ROLLOUT_ID = _param("rollout_id", "path", ID)
LIMIT = _param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": 200},
    description="page size (default 50)",
)
CURSOR = _param(
    "cursor", "query", {"type": "string"}, description="next_cursor of the previous page"
)
CHANNEL = _param("channel", "query", {"type": "string"}, True, "channel name, e.g. leak1.ior")
START = _param(
    "start",
    "query",
    {"type": "integer", "minimum": 0, "maximum": 4294967295},
    description="epoch seconds, inclusive (default end - 1 day)",
)
END = _param(
    "end",
    "query",
    {"type": "integer", "minimum": 0, "maximum": 4294967295},
    description="epoch seconds, exclusive (default now)",
)

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}})}),
    "Me": _obj(
        {
            "user_id": {"type": "integer"},
            "email": {"type": "string"},
            "role": {
                "type": "string",
                "enum": ["operator", "installer", "customer_admin", "customer_viewer"],
            },
            "customer_id": NULL_INT,
        }
    ),
    "Terminal": _obj(
        {
            "id": {"type": "string"},
            "customer_id": NULL_INT,
            "name": {"type": "string"},
            "site_address": {"type": "string"},
            "connectivity": {"type": "string", "enum": ["unknown", "online", "offline"]},
            "last_seen_at": TIME,
            "firmware_version": NULL_STR,
            "config_status": {"type": "string", "enum": ["none", "pending", "applied", "rejected"]},
            "config_version": NULL_INT,
            "provisioned": {"type": "boolean"},
            "status": {"type": "string", "enum": ["active", "suspended", "decommissioned"]},
            "registered_on": NULL_DATE,
            "contract_start": NULL_DATE,
            "contract_end": NULL_DATE,
            "cancellation_notice_on": NULL_DATE,
            # null: the terminal has not said (older firmware, or no birth yet)
            "sensors": {
                "type": "array",
                "nullable": True,
                "items": _obj(
                    {
                        "name": {"type": "string"},
                        "model": {"type": "string"},
                        "status": {
                            "type": "string",
                            "description": "documented, reference, test or site "
                            "(a later firmware may add others; treat them as not documented)",
                        },
                        "documented": {"type": "boolean"},
                    }
                ),
            },
        }
    ),
    "TerminalInput": {
        "type": "object",
        "required": ["id"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
            "name": {"type": "string", "maxLength": 200},
            "customer_id": {"type": "integer", "nullable": True},
            "site_address": {"type": "string"},
            **CONTRACT_DATES,
        },
    },
    "TerminalChange": {
        "type": "object",
        "additionalProperties": False,
        "description": "fields left out keep their value (operators)",
        "properties": {
            "name": {"type": "string", "maxLength": 200},
            "customer_id": {"type": "integer", "nullable": True},
            "site_address": {"type": "string"},
            **CONTRACT_DATES,
        },
    },
    "OtaBundle": {"type": "object", "description": "a signed firmware bundle as uploaded"},
    "OtaRollout": {
        "type": "object",
        "description": "a bundle offered to terminals in waves; with its targets when read one "
        "by one: state pending, offered, downloading, verifying, installed, confirmed, "
        "rolled_back or failed, percent and reason (docs/ota.md)",
    },
    "NewOtaRollout": {
        "type": "object",
        "required": ["bundle"],
        "properties": {
            "bundle": ID,
            "terminals": {"type": "array", "items": {"type": "string"}},
            "customer_id": ID,
            "waves": {"type": "string", "default": "1,10%,100%"},
            "threshold_pct": {"type": "integer", "minimum": 0, "maximum": 100, "default": 20},
            "confirm_s": {"type": "integer", "minimum": 10, "default": 300},
            "stall_s": {"type": "integer", "default": 900},
        },
    },
    "Command": _obj(
        {
            "id": {"type": "integer"},
            "terminal_id": {"type": "string"},
            "name": {"type": "string", "enum": ["sample_now", "rebirth", "resync_clock", "reboot"]},
            "args": {"type": "object"},
            "state": {
                "type": "string",
                "enum": ["queued", "delivered", "succeeded", "failed", "timed_out"],
            },
            "requested_at": TIME,
            "requested_by": {"type": "string"},
            "delivered_at": TIME,
            "answered_at": TIME,
            "expires_at": TIME,
            "ok": {"type": "boolean", "nullable": True},
            "result": {"nullable": True},
            "error": NULL_STR,
        },
        ["id", "terminal_id", "name", "args", "state", "requested_at", "expires_at"],
    ),
    "NewCommand": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "description": "reboot: operators and installers; the others also customer "
        "administrators. resync_clock takes args {time: Unix seconds} (default: the "
        "terminal asks its NTP server); the others take no args",
        "properties": {
            "name": {"type": "string", "enum": ["sample_now", "rebirth", "resync_clock", "reboot"]},
            "args": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"time": {"type": "integer", "minimum": 0}},
            },
        },
    },
    "ParkedGroup": _obj(
        {
            "terminal_id": {"type": "string"},
            "reason": {"type": "string", "enum": ["not_contracted", "no_birth", "held_over_limit"]},
            "count": {"type": "integer"},
            "oldest": TIME,
            "newest": TIME,
            "release_requested": {"type": "integer"},
        },
        ["terminal_id", "reason", "count", "oldest", "newest", "release_requested"],
    ),
    "ParkedAction": {
        "type": "object",
        "additionalProperties": False,
        "description": "reason: only the frames parked for it (default: all of the terminal's)",
        "properties": {
            "reason": {"type": "string", "enum": ["not_contracted", "no_birth", "held_over_limit"]}
        },
    },
    "StatusChange": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {
            "status": {"type": "string", "enum": ["active", "suspended", "decommissioned"]},
            "reason": {"type": "string", "maxLength": 500},
        },
    },
    "Site": _obj(
        {
            "terminal_id": {"type": "string"},
            "broker": _obj(
                {
                    "host": {"type": "string"},
                    "port": {"type": "integer"},
                    "tls": {"type": "boolean"},
                }
            ),
            "credentials": _obj({"username": {"type": "string"}, "password": {"type": "string"}}),
            "wiring": {"type": "array", "items": {"type": "object"}},
        }
    ),
    "Channel": _obj(
        {
            "alias": {"type": "integer"},
            "name": {"type": "string"},
            "unit": {"type": "string"},
            "kind": {"type": "string"},
            "display_name": {"type": "string", "description": "the customer's name; '' if none"},
            "state_off": {**NULL_STR, "description": "name of value 0 (contacts only)"},
            "state_on": {**NULL_STR, "description": "name of value 1 (contacts only)"},
            "key": {"type": "boolean", "description": "shown on the fleet overview"},
        }
    ),
    "LabelsInput": {
        "type": "object",
        "required": ["labels"],
        "additionalProperties": False,
        "properties": {
            "labels": {
                "type": "array",
                "maxItems": 64,
                "items": {
                    "type": "object",
                    "required": ["channel"],
                    "additionalProperties": False,
                    "properties": {
                        "channel": {"type": "string", "maxLength": 64},
                        "display_name": {"type": "string", "maxLength": 100},
                        "state_off": {"type": "string", "maxLength": 32},
                        "state_on": {"type": "string", "maxLength": 32},
                        "key": {"type": "boolean"},
                    },
                },
            }
        },
    },
    "Sample": _obj({"ts": {"type": "integer"}, "value": {"type": "number"}}),
    "Series": _obj(
        {
            "channel": {"type": "string"},
            "unit": {"type": "string"},
            "kind": {"type": "string"},
            "start": {"type": "integer"},
            "end": {"type": "integer"},
            "raw": {"type": "boolean"},
            "width": NULL_INT,
            **{
                k: {"type": "array", "items": {"type": "number"}}
                for k in ("t", "min", "mean", "max")
            },
            "late": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "times of raw samples that arrived late (historical)",
            },
        }
    ),
    "Alarm": _obj(
        {
            "id": {"type": "integer"},
            "terminal_id": {"type": "string"},
            "channel": NULL_STR,
            "channel_label": {**NULL_STR, "description": "the channel's display name"},
            "cond": {"type": "string"},
            "severity": {"type": "string", "enum": ["warning", "alarm"]},
            "state": {"type": "string", "enum": ["raised", "acknowledged", "cleared"]},
            "raised_at": TIME,
            "acked_at": TIME,
            "ack_comment": NULL_STR,
            "cleared_at": TIME,
            "value": NULL_NUM,
            "threshold": NULL_NUM,
            "historical": {"type": "boolean"},
            "muted": {
                "type": "boolean",
                "description": "raised during a maintenance window: recorded, nobody notified",
            },
        }
    ),
    "Report": _obj(
        {
            "id": {"type": "integer"},
            "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
            "terminals": {"type": "integer"},
            "issued_at": TIME,
            "pdf": {"type": "string", "description": "path of the PDF"},
            "csv": {"type": "string", "description": "path of the CSV"},
        }
    ),
    "Rule": _obj(
        {
            "id": {"type": "integer"},
            "channel": NULL_STR,
            "cond": {"type": "string"},
            "warn": NULL_NUM,
            "alarm": NULL_NUM,
            "hysteresis": {"type": "number"},
            "on_delay_s": {"type": "integer"},
            "off_delay_s": {"type": "integer"},
            "count": NULL_INT,
            "window_s": NULL_INT,
            "enabled": {"type": "boolean"},
            "override_warn": NULL_NUM,
            "override_alarm": NULL_NUM,
            "override_until": TIME,
        }
    ),
    "RuleInput": {
        "type": "object",
        "required": ["channel", "cond"],
        "additionalProperties": False,
        "properties": {
            "channel": {"type": "string"},
            "cond": {"type": "string", "enum": ["hi", "lo", "leak", "contact"]},
            "warn": {"type": "number", "nullable": True},
            "alarm": {"type": "number", "nullable": True},
            "hysteresis": {"type": "number", "minimum": 0},
            "on_delay_s": {"type": "integer", "minimum": 0, "maximum": 86400},
            "off_delay_s": {"type": "integer", "minimum": 0, "maximum": 86400},
            "count": {"type": "integer", "minimum": 1, "nullable": True},
            "window_s": {"type": "integer", "minimum": 1, "nullable": True},
            "enabled": {"type": "boolean"},
        },
    },
    "Target": _obj(
        {
            "id": {"type": "integer"},
            "customer_id": {"type": "integer"},
            "channel": {"type": "string", "enum": ["email", "webhook", "chat"]},
            "address": {"type": "string"},
            "terminal_id": NULL_STR,
            "channel_name": NULL_STR,
            "cond": NULL_STR,
            "min_severity": {"type": "string", "enum": ["warning", "alarm"]},
            "language": NULL_STR,
            "notify_recovery": {"type": "boolean"},
            "enabled": {"type": "boolean"},
        }
    ),
    "TargetSecret": _obj(
        {
            "hmac_secret": {
                "type": "string",
                "description": "signs this target's webhooks (X-Mimamori-Signature); "
                "returned only here and when the target is created",
            }
        }
    ),
    "ForwardingEndpoint": _obj(
        {
            "id": {"type": "integer"},
            "customer_id": {"type": "integer"},
            "kind": {"type": "string", "enum": ["webhook", "sftp"]},
            "name": {"type": "string"},
            "url": {"type": "string"},
            "terminal_id": NULL_STR,
            "enabled": {"type": "boolean"},
            "file_period": {"type": "string", "enum": ["hourly", "daily"], "nullable": True},
            "file_scope": {"type": "string", "enum": ["terminal", "customer"], "nullable": True},
            "file_timezone": NULL_STR,
            "host_key": {
                "type": "string",
                "nullable": True,
                "description": "the SFTP server's pinned host key, '<type> <base64>'",
            },
            "host_key_fingerprint": NULL_STR,
            "public_key": {
                "type": "string",
                "nullable": True,
                "description": "SFTP: the endpoint's own key, the line to add to the "
                "account's authorized_keys",
            },
            "last_attempt_at": TIME,
            "last_success_at": TIME,
            "last_error": NULL_STR,
            "consecutive_failures": {"type": "integer", "minimum": 0},
            "created_at": TIME,
        }
    ),
    "ForwardingSecret": _obj(
        {
            "hmac_secret": {
                "type": "string",
                "description": "a webhook endpoint's new signing secret, returned only here "
                "and when the endpoint is created",
            },
            "public_key": {
                "type": "string",
                "description": "an SFTP endpoint's new key: the line to install",
            },
        },
        required=[],
    ),
    "ForwardingEndpointInput": {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": {
                "type": "string",
                "maxLength": 500,
                "description": "https://... (SenML webhook) or sftp://user@host[:port]/directory "
                "(CSV files); the kind follows the address and never changes",
            },
            "name": {"type": "string", "maxLength": 200},
            "customer_id": {
                "type": "integer",
                "nullable": True,
                "description": "required for staff; customers: their own",
            },
            "terminal_id": {
                "type": "string",
                "nullable": True,
                "maxLength": 32,
                "description": "one terminal; null: all the customer's",
            },
            "enabled": {"type": "boolean", "description": "on a change (default true)"},
            "host_key": {
                "type": "string",
                "maxLength": 4000,
                "description": "SFTP: the server's host key as ssh-keyscan prints it "
                "(required to add; empty on a change keeps the pinned one)",
            },
            "file_period": {"type": "string", "enum": ["hourly", "daily"]},
            "file_scope": {"type": "string", "enum": ["terminal", "customer"]},
            "file_timezone": {
                "type": "string",
                "maxLength": 64,
                "description": "IANA zone the periods are cut in (default: the customer's)",
            },
        },
    },
    "TargetInput": {
        "type": "object",
        "required": ["channel", "address"],
        "additionalProperties": False,
        "properties": {
            "channel": {"type": "string", "enum": ["email", "webhook", "chat"]},
            "address": {"type": "string", "maxLength": 500},
            "customer_id": {
                "type": "integer",
                "nullable": True,
                "description": "required for staff; customers: their own",
            },
            "terminal_id": {"type": "string", "nullable": True},
            "channel_name": {
                "type": "string",
                "nullable": True,
                "maxLength": 64,
                "description": "one channel or contact input (e.g. di.di3); null: all",
            },
            "cond": {"type": "string", "nullable": True},
            "min_severity": {"type": "string", "enum": ["warning", "alarm"]},
            "language": {"type": "string", "nullable": True},
            "notify_recovery": {"type": "boolean"},
            "enabled": {"type": "boolean"},
        },
    },
    "MaintenanceWindow": _obj(
        {
            "id": {"type": "integer"},
            "customer_id": NULL_INT,
            "terminal_id": NULL_STR,
            "channels": {"type": "array", "items": {"type": "string"}},
            "starts_at": TIME,
            "ends_at": TIME,
            "reason": {"type": "string"},
            "announcement_id": NULL_INT,
        }
    ),
    "MaintenanceWindowInput": {
        "type": "object",
        "required": ["starts_at", "ends_at"],
        "additionalProperties": False,
        "properties": {
            "customer_id": {
                "type": "integer",
                "nullable": True,
                "description": "required for staff; customers: their own",
            },
            "terminal_id": {"type": "string", "nullable": True, "maxLength": 32},
            "channels": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
                "description": "channel names; empty: the whole terminal",
            },
            "starts_at": {"type": "string", "format": "date-time"},
            "ends_at": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "maxLength": 200},
        },
    },
}


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *errors: int,
    ok_code: int = 200,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    op_id: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "responses": {str(ok_code): ok, **_errors(401, *errors)},
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


NO_CONTENT = {"description": "Done"}
CUSTOMER_ID = _param(
    "customer_id",
    "query",
    ID,
    description="whose reports (staff only; a customer's token sees its own)",
)


def _file(mime: str) -> dict[str, Any]:
    return {"description": "OK", "content": {mime: {"schema": {"type": "string"}}}}


OPTIONAL_ACK = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"comment": {"type": "string", "maxLength": 2000}},
            }
        }
    },
}
OPTIONAL_ROTATE = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"rotate": {"type": "boolean"}},
            }
        }
    },
}

PATHS: dict[str, Any] = {
    "/me": {"get": _op("Who the token belongs to", _json(_ref("Me")), op_id="getMe")},
    "/terminals": {
        "get": _op(
            "Terminals the caller may see, by id",
            _json(_page("Terminal")),
            400,
            params=[LIMIT, CURSOR],
            op_id="listTerminals",
        ),
        "post": _op(
            "Register a terminal (operators, installers)",
            _json(_ref("Terminal"), "Registered"),
            400,
            403,
            404,
            422,
            ok_code=201,
            body=_body("TerminalInput"),
            op_id="registerTerminal",
        ),
    },
    "/terminals/{tid}": {
        "get": _op("One terminal", _json(_ref("Terminal")), 404, params=[TID], op_id="getTerminal"),
        "patch": _op(
            "Change a terminal's customer, name, address or contract dates (operators)",
            _json(_ref("Terminal")),
            400,
            403,
            404,
            422,
            params=[TID],
            body=_body("TerminalChange"),
            op_id="changeTerminal",
        ),
    },
    "/terminals/{tid}/status": {
        "post": _op(
            "Suspend, resume (active) or decommission a terminal (operators); the "
            "broker account follows within seconds",
            _json(_ref("Terminal")),
            400,
            403,
            404,
            422,
            params=[TID],
            body=_body("StatusChange"),
            op_id="setTerminalStatus",
        )
    },
    "/terminals/{tid}/commands": {
        "get": _op(
            "The terminal's remote commands, newest first (at most 50), with their state: "
            "queued, delivered (the broker took it), succeeded / failed (the terminal's "
            "answer), or timed_out",
            _json(_obj({"items": {"type": "array", "items": _ref("Command")}})),
            404,
            params=[TID],
            op_id="listCommands",
        ),
        "post": _op(
            "Send a remote command (reboot, sample_now, rebirth, resync_clock; audited); "
            "state failed with an error when the broker did not take it",
            _json(_ref("Command"), "Sent"),
            400,
            403,
            404,
            422,
            ok_code=201,
            params=[TID],
            body=_body("NewCommand"),
            op_id="sendCommand",
        ),
    },
    "/terminals/{tid}/commands/{command_id}": {
        "get": _op(
            "One remote command and its state",
            _json(_ref("Command")),
            404,
            params=[TID, COMMAND_ID],
            op_id="getCommand",
        )
    },
    "/ota/bundles": {
        "get": _op(
            "Uploaded firmware bundles, newest first (operators)",
            _json(_obj({"items": {"type": "array", "items": _ref("OtaBundle")}})),
            403,
            op_id="listOtaBundles",
        ),
        "post": _op(
            "Upload a bundle: the body is the .tar made by mimamori-install sign; refused "
            "(422, with the reason) unless every file matches the manifest, it fits the flash "
            "budget and is signed by a key in MIMAMORI_OTA_KEYS (operators)",
            _json(_ref("OtaBundle"), "Stored"),
            403,
            422,
            ok_code=201,
            body={
                "required": True,
                "content": {
                    "application/x-tar": {"schema": {"type": "string", "format": "binary"}}
                },
            },
            op_id="uploadOtaBundle",
        ),
    },
    "/ota/rollouts": {
        "get": _op(
            "Rollouts, newest first (operators)",
            _json(_obj({"items": {"type": "array", "items": _ref("OtaRollout")}})),
            403,
            op_id="listOtaRollouts",
        ),
        "post": _op(
            "Start a rollout of a bundle to terminals (a list, or a customer's) in waves; "
            "audited (operators)",
            _json(_ref("OtaRollout"), "Started"),
            400,
            403,
            404,
            422,
            ok_code=201,
            body=_body("NewOtaRollout"),
            op_id="startOtaRollout",
        ),
    },
    "/ota/rollouts/{rollout_id}": {
        "get": _op(
            "One rollout with every terminal's progress (operators)",
            _json(_ref("OtaRollout")),
            403,
            404,
            params=[ROLLOUT_ID],
            op_id="getOtaRollout",
        )
    },
    **{
        f"/ota/rollouts/{{rollout_id}}/{action}": {
            "post": _op(
                summary,
                _json(_ref("OtaRollout")),
                403,
                404,
                422,
                params=[ROLLOUT_ID],
                op_id=f"{action}OtaRollout",
            )
        }
        for action, summary in (
            ("pause", "Pause a running rollout (audited)"),
            ("resume", "Resume a paused rollout with its next wave (audited)"),
            ("cancel", "Stop offering a rollout's bundle (audited)"),
        )
    },
    "/parked": {
        "get": _op(
            "Parked frames of every terminal, per reason (operators): frames the cloud "
            "acknowledged and keeps but has not applied",
            _json(_obj({"items": {"type": "array", "items": _ref("ParkedGroup")}})),
            403,
            op_id="listParked",
        )
    },
    "/terminals/{tid}/parked": {
        "get": _op(
            "The terminal's parked frames, per reason (operators)",
            _json(_obj({"items": {"type": "array", "items": _ref("ParkedGroup")}})),
            403,
            404,
            params=[TID],
            op_id="getTerminalParked",
        )
    },
    "/terminals/{tid}/parked/release": {
        "post": _op(
            "Apply the terminal's parked frames as of when they arrived, whatever the "
            "contract says (operators; audited); the ingest applies them within seconds",
            _json(_obj({"frames": {"type": "integer"}}, ["frames"])),
            400,
            403,
            404,
            422,
            params=[TID],
            body=_body("ParkedAction", required=False),
            op_id="releaseParked",
        )
    },
    "/terminals/{tid}/parked/discard": {
        "post": _op(
            "Delete the terminal's parked frames for good (operators; audited)",
            _json(_obj({"frames": {"type": "integer"}}, ["frames"])),
            400,
            403,
            404,
            422,
            params=[TID],
            body=_body("ParkedAction", required=False),
            op_id="discardParked",
        )
    },
    "/terminals/{tid}/provision": {
        "post": _op(
            "Create the terminal's MQTT credentials (once; rotate to replace) and return a "
            "site file holding them",
            _json(_ref("Site"), "Created"),
            400,
            403,
            404,
            422,
            ok_code=201,
            params=[TID],
            body=OPTIONAL_ROTATE,
            op_id="provisionTerminal",
        )
    },
    "/terminals/{tid}/channels": {
        "get": _op(
            "Channels announced by the terminal's birth frame",
            _json(_obj({"items": {"type": "array", "items": _ref("Channel")}})),
            404,
            params=[TID],
            op_id="listChannels",
        )
    },
    "/terminals/{tid}/labels": {
        "put": _op(
            "Set display names, contact state names and key flags of some channels",
            _json(_obj({"items": {"type": "array", "items": _ref("Channel")}})),
            400,
            403,
            404,
            422,
            params=[TID],
            body=_body("LabelsInput"),
            op_id="setLabels",
        )
    },
    "/terminals/{tid}/samples": {
        "get": _op(
            "Raw samples of one channel, oldest first",
            _json(_page("Sample")),
            400,
            404,
            params=[
                TID,
                CHANNEL,
                START,
                END,
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 5000}),
                CURSOR,
            ],
            op_id="listSamples",
        )
    },
    "/terminals/{tid}/series": {
        "get": _op(
            "Aggregated series: raw when few, else min/mean/max buckets",
            _json(_ref("Series")),
            400,
            404,
            422,
            params=[
                TID,
                CHANNEL,
                START,
                END,
                _param("max_points", "query", {"type": "integer", "minimum": 1, "maximum": 2000}),
            ],
            op_id="getSeries",
        )
    },
    "/terminals/{tid}/thresholds": {
        "get": _op(
            "Threshold rules the terminal decides",
            _json(_obj({"items": {"type": "array", "items": _ref("Rule")}})),
            404,
            params=[TID],
            op_id="listThresholds",
        ),
        "post": _op(
            "Add a rule and push the config to the terminal",
            _json(_obj({"rule": _ref("Rule"), "config_version": NULL_INT}), "Added"),
            400,
            403,
            404,
            422,
            502,
            ok_code=201,
            params=[TID],
            body=_body("RuleInput"),
            op_id="createThreshold",
        ),
    },
    "/terminals/{tid}/thresholds/{rule_id}": {
        "delete": _op(
            "Delete a rule and push the config",
            _json(_obj({"config_version": NULL_INT})),
            403,
            404,
            422,
            502,
            params=[TID, RULE_ID],
            op_id="deleteThreshold",
        )
    },
    "/alarms": {
        "get": _op(
            "Alarms, newest first",
            _json(_page("Alarm")),
            400,
            params=[
                LIMIT,
                CURSOR,
                _param("terminal_id", "query", {"type": "string"}),
                _param(
                    "state",
                    "query",
                    {"type": "string", "enum": ["open", "raised", "acknowledged", "cleared"]},
                ),
                _param("severity", "query", {"type": "string", "enum": ["warning", "alarm"]}),
            ],
            op_id="listAlarms",
        )
    },
    "/alarms/export": {
        "get": _op(
            "Alarm history as CSV (UTF-8 with BOM; every match, newest first; times "
            "in the customer's zone with their offset)",
            _file("text/csv"),
            400,
            params=[
                _param("terminal_id", "query", {"type": "string"}),
                _param(
                    "state",
                    "query",
                    {"type": "string", "enum": ["open", "raised", "acknowledged", "cleared"]},
                ),
                _param("severity", "query", {"type": "string", "enum": ["warning", "alarm"]}),
                _param(
                    "from",
                    "query",
                    {"type": "string", "format": "date"},
                    description="raised on or after this day (customer's zone)",
                ),
                _param(
                    "to",
                    "query",
                    {"type": "string", "format": "date"},
                    description="raised on or before this day (customer's zone)",
                ),
            ],
            op_id="exportAlarms",
        )
    },
    "/reports": {
        "get": _op(
            "Issued monthly reports, newest first",
            _json(_obj({"items": {"type": "array", "items": _ref("Report")}})),
            400,
            404,
            params=[CUSTOMER_ID],
            op_id="listReports",
        )
    },
    "/reports/{month}/{extension}": {
        "get": _op(
            "One issued monthly report as PDF or CSV",
            {
                "description": "OK",
                "content": {
                    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
            400,
            404,
            params=[
                _param(
                    "month", "path", {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"}
                ),
                _param("extension", "path", {"type": "string", "enum": ["pdf", "csv"]}),
                CUSTOMER_ID,
            ],
            op_id="getReport",
        )
    },
    "/alarms/{alarm_id}": {
        "get": _op("One alarm", _json(_ref("Alarm")), 404, params=[ALARM_ID], op_id="getAlarm")
    },
    "/alarms/{alarm_id}/acknowledge": {
        "post": _op(
            "Acknowledge a raised alarm",
            _json(_ref("Alarm")),
            400,
            403,
            404,
            422,
            params=[ALARM_ID],
            body=OPTIONAL_ACK,
            op_id="acknowledgeAlarm",
        )
    },
    "/targets": {
        "get": _op(
            "Notification targets",
            _json(_page("Target")),
            400,
            params=[LIMIT, CURSOR],
            op_id="listTargets",
        ),
        "post": _op(
            "Add a notification target (a webhook target's response carries its "
            "signing secret, hmac_secret, this once)",
            _json(_ref("Target"), "Added"),
            400,
            403,
            404,
            422,
            ok_code=201,
            body=_body("TargetInput"),
            op_id="createTarget",
        ),
    },
    "/targets/{target_id}": {
        "get": _op("One target", _json(_ref("Target")), 404, params=[TARGET_ID], op_id="getTarget"),
        "put": _op(
            "Replace a target",
            _json(_ref("Target")),
            400,
            403,
            404,
            422,
            params=[TARGET_ID],
            body=_body("TargetInput"),
            op_id="updateTarget",
        ),
        "delete": _op(
            "Delete a target",
            NO_CONTENT,
            403,
            404,
            ok_code=204,
            params=[TARGET_ID],
            op_id="deleteTarget",
        ),
    },
    "/forwarding-endpoints": {
        "get": _op(
            "Forwarding endpoints (SenML webhooks and SFTP file destinations)",
            _json(_page("ForwardingEndpoint")),
            400,
            params=[LIMIT, CURSOR],
            op_id="listForwardingEndpoints",
        ),
        "post": _op(
            "Add a forwarding endpoint (a webhook's response carries its signing "
            "secret, hmac_secret, this once; an SFTP endpoint's its public_key to install)",
            _json(_ref("ForwardingEndpoint"), "Added"),
            400,
            403,
            404,
            422,
            ok_code=201,
            body=_body("ForwardingEndpointInput"),
            op_id="createForwardingEndpoint",
        ),
    },
    "/forwarding-endpoints/{endpoint_id}": {
        "get": _op(
            "One forwarding endpoint, with its last attempt",
            _json(_ref("ForwardingEndpoint")),
            404,
            params=[ENDPOINT_ID],
            op_id="getForwardingEndpoint",
        ),
        "put": _op(
            "Change a forwarding endpoint (its kind stays)",
            _json(_ref("ForwardingEndpoint")),
            400,
            403,
            404,
            422,
            params=[ENDPOINT_ID],
            body=_body("ForwardingEndpointInput"),
            op_id="updateForwardingEndpoint",
        ),
        "delete": _op(
            "Delete a forwarding endpoint",
            NO_CONTENT,
            403,
            404,
            ok_code=204,
            params=[ENDPOINT_ID],
            op_id="deleteForwardingEndpoint",
        ),
    },
    "/forwarding-endpoints/{endpoint_id}/secret": {
        "post": _op(
            "A webhook's new signing secret, or an SFTP endpoint's new key pair "
            "(the old one stops working)",
            _json(_ref("ForwardingSecret")),
            403,
            404,
            params=[ENDPOINT_ID],
            op_id="rotateForwardingEndpointSecret",
        ),
    },
    "/maintenance-windows": {
        "get": _op(
            "Maintenance windows (in force or planned first, then the last ended)",
            _json(_page("MaintenanceWindow")),
            op_id="listMaintenanceWindows",
        ),
        "post": _op(
            "Plan a maintenance window: alarms in it are recorded as muted, not notified",
            _json(_ref("MaintenanceWindow"), "Planned"),
            400,
            403,
            404,
            422,
            ok_code=201,
            body=_body("MaintenanceWindowInput"),
            op_id="createMaintenanceWindow",
        ),
    },
    "/maintenance-windows/{window_id}/end": {
        "post": _op(
            "End a window in force now (200), or delete one not begun yet (204)",
            _json(_ref("MaintenanceWindow")),
            403,
            404,
            params=[_param("window_id", "path", ID)],
            op_id="endMaintenanceWindow",
        ),
    },
    "/targets/{target_id}/secret": {
        "post": _op(
            "Make a new signing secret (the old one stops working)",
            _json(_ref("TargetSecret")),
            403,
            404,
            params=[TARGET_ID],
            op_id="rotateTargetSecret",
        ),
    },
}


def document(server_url: str) -> dict[str, Any]:
    """The OpenAPI document, with ``server_url`` (``.../api/v1``) as its server."""
    error = _json(_ref("Error"))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mimamori API",
            "version": VERSION,
            "description": "Terminals, samples, alarms, thresholds, notification "
            "targets, forwarding endpoints and provisioning. Authenticate with "
            "'Authorization: Bearer <token>'. Errors: "
            '{"error": {"code", "message"}}.',
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
            "responses": {
                f"E{code}": dict(error, description=text)
                for code, text in (
                    (400, "Bad request"),
                    (401, "No or invalid bearer token"),
                    (403, "Role may not do this"),
                    (404, "Not found (or another customer's)"),
                    (409, "Conflict"),
                    (422, "Rejected by a rule"),
                    (502, "The broker did not take the config"),
                )
            },
        },
    }
