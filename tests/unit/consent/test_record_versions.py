"""Labels across versions (issue 14): consent folds a record's versions into the union of their categories
and codes, so a sensitive label gained in any version protects every version, and says which version it
decided on."""

from __future__ import annotations

from consent_fixtures import DENY, RECORDS, Env, clock, decide, env, grant  # noqa: F401 - clock and env are fixtures
from consent_ledger_fake import SEALER, FakeLedger, register_record

from carechain.common.v1 import common_pb2 as c
from carechain.consent.state import ConsentState
from carechain.consent.v1 import consent_pb2


def test_versions_fold_into_the_union_of_their_labels_and_codes() -> None:
    ledger = FakeLedger()
    register_record(ledger, RECORDS, "rec-1", "pat-1", [c.SENSITIVITY_CATEGORY_NORMAL], codes=["sct|1"])
    register_record(ledger, RECORDS, "rec-1", "pat-1", [c.SENSITIVITY_CATEGORY_MENTAL_HEALTH], codes=["sct|2"],
                    version=2)
    register_record(ledger, RECORDS, "rec-1", "pat-1", [c.SENSITIVITY_CATEGORY_NORMAL], codes=["sct|3"], version=3)
    state = ConsentState(SEALER)
    state.sync(ledger.ListTransactions)
    record = state.record("rec-1")
    assert record is not None and record.version == 3
    assert record.categories == (c.SENSITIVITY_CATEGORY_NORMAL, c.SENSITIVITY_CATEGORY_MENTAL_HEALTH)
    assert record.codes == ("sct|1", "sct|2", "sct|3")


def test_a_version_that_is_not_newer_changes_nothing() -> None:
    ledger = FakeLedger()
    register_record(ledger, RECORDS, "rec-1", "pat-1", [c.SENSITIVITY_CATEGORY_MENTAL_HEALTH], version=1)
    register_record(ledger, RECORDS, "rec-1", "pat-1", [c.SENSITIVITY_CATEGORY_NORMAL], version=1)
    state = ConsentState(SEALER)
    state.sync(ledger.ListTransactions)
    record = state.record("rec-1")
    assert record is not None and record.categories == (c.SENSITIVITY_CATEGORY_MENTAL_HEALTH,)


def test_a_version_adding_a_sensitive_label_denies_what_was_permitted(env: Env) -> None:  # noqa: F811
    grant(env)  # permits oncology specialists ONCOLOGY records for treatment
    before = decide(env)
    assert before.effect == consent_pb2.DECISION_EFFECT_PERMIT and before.record_version == 1
    register_record(env.ledger, RECORDS, "rec-onc", "pat-1", [c.SENSITIVITY_CATEGORY_MENTAL_HEALTH], version=2)
    after = decide(env)
    assert after.effect == DENY and after.record_version == 2
