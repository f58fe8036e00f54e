"""SMART scopes and the token's purpose of use (carechain.core.smart_scopes)."""

from __future__ import annotations

import pytest

from carechain.common.v1 import common_pb2
from carechain.core.errors import InvalidArgument, PermissionDenied
from carechain.core.smart_scopes import (
    SmartScope,
    format_scopes,
    parse_scope,
    parse_scopes,
    permits,
    purpose_code,
    purpose_value,
    require_context,
    require_purpose,
    require_scope,
    searchable_types,
)


@pytest.mark.parametrize(("text", "parsed"), [
    ("system/Condition.rs", SmartScope("system", "Condition", "rs")),
    ("user/Observation.r", SmartScope("user", "Observation", "r")),
    ("system/*.cruds", SmartScope("system", "*", "cruds")),
    ("system/*.read", SmartScope("system", "*", "rs")),
    ("system/Condition.write", SmartScope("system", "Condition", "cud")),
    ("user/Patient.*", SmartScope("user", "Patient", "cruds")),
])
def test_v2_and_v1_scopes_parse(text: str, parsed: SmartScope) -> None:
    assert parse_scope(text) == parsed


@pytest.mark.parametrize("text", [
    "patient/Condition.rs",  # no patient-launch context for backend services
    "system/Unicorn.rs",  # not a resource type
    "system/Bundle.r",  # CareChain stores no Bundles
    "system/Condition.sr", "system/Condition.rr", "system/Condition.x", "system/Condition.",
    "openid", "launch/patient", "system/condition.rs", "system/Condition.rs?category=x",
])
def test_unsupported_scopes_are_refused_naming_scope(text: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse_scope(text)
    assert str(excinfo.value).startswith("scope:")


def test_scope_lists_are_deduplicated_normalised_and_bounded() -> None:
    scopes = parse_scopes("system/Observation.read  system/Condition.rs system/Condition.rs")
    assert format_scopes(scopes) == "system/Condition.rs system/Observation.rs"
    for text in ("", "   ", " ".join(f"system/Condition.{p}" for p in ("c", "r", "u", "d", "s")) * 10):
        with pytest.raises(InvalidArgument, match="^scope"):
            parse_scopes(text)


def test_permits_by_type_and_interaction() -> None:
    scopes = parse_scopes("system/Condition.rs system/*.c")
    assert permits(scopes, "Condition", "r") and permits(scopes, "Condition", "s")
    assert not permits(scopes, "Observation", "r")
    assert permits(scopes, "Observation", "c")  # the wildcard
    assert not permits(scopes, "Condition", "u")
    with pytest.raises(ValueError):
        permits(scopes, "Condition", "x")


def test_require_scope_leaves_unscoped_tokens_alone_and_never_names_the_type() -> None:
    require_scope("", "Observation", "r")
    require_scope("system/Condition.rs", "Condition", "r")
    with pytest.raises(PermissionDenied) as excinfo:
        require_scope("system/Condition.rs", "Observation", "r")
    assert "Observation" not in str(excinfo.value) and "read" in str(excinfo.value)
    with pytest.raises(PermissionDenied, match="create"):
        require_scope("system/Condition.rs", "Condition", "c")


def test_context_per_kind_of_client() -> None:
    require_context(parse_scopes("system/Condition.rs"), "system")
    with pytest.raises(InvalidArgument, match="^scope: this client may only request user/"):
        require_context(parse_scopes("system/Condition.rs user/Condition.rs"), "user")


def test_purpose_codes_round_trip_and_bind_reads() -> None:
    assert purpose_code(common_pb2.PURPOSE_OF_USE_TREAT) == "TREAT"
    assert purpose_value("TREAT") == purpose_value("treat") == purpose_value("PURPOSE_OF_USE_TREAT") == \
        common_pb2.PURPOSE_OF_USE_TREAT
    assert purpose_value("ETREAT") == common_pb2.PURPOSE_OF_USE_ETREAT
    for bad in ("", "UNSPECIFIED", "NOPE"):
        with pytest.raises(InvalidArgument, match="^purpose_of_use"):
            purpose_value(bad)
    require_purpose("", common_pb2.PURPOSE_OF_USE_HRESCH)
    require_purpose("TREAT", common_pb2.PURPOSE_OF_USE_TREAT)
    with pytest.raises(InvalidArgument, match="^purpose: must be the access token's purpose of use"):
        require_purpose("TREAT", common_pb2.PURPOSE_OF_USE_HRESCH)


def test_searchable_types_follow_the_s_interaction() -> None:
    assert searchable_types("", ["Condition"]) == {"Condition"}  # not a SMART token: unlimited
    assert searchable_types("", []) == frozenset()
    claim = "system/Condition.rs system/Observation.r system/Encounter.s"
    assert searchable_types(claim, []) == {"Condition", "Encounter"}  # no type asked: the s types only
    assert searchable_types(claim, ["Encounter"]) == {"Encounter"}
    with pytest.raises(PermissionDenied, match="do not permit this search"):
        searchable_types(claim, ["Condition", "Observation"])
    with pytest.raises(PermissionDenied):
        searchable_types("system/Condition.r", [])
    assert searchable_types("system/*.rs", []) == frozenset()  # a wildcard: every type
