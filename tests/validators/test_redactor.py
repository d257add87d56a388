"""One placeholder map per document, over its text, id, fields and earlier outputs (real presidio)."""

from __future__ import annotations

from steadyflow.spec.models import InputSpec
from steadyflow.validators.inputs import prepare
from steadyflow.validators.pii import Redactor, id_view, restore

TYPES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON"]


def test_file_names_are_read_as_presidio_needs_them() -> None:
    assert id_view("in/jane.doe@example.com.txt") == "in jane.doe@example.com    "
    redactor = Redactor(TYPES)
    assert redactor.many(["in/jane.doe@example.com.txt"], [id_view("in/jane.doe@example.com.txt")]) == [
        "in/<EMAIL_ADDRESS_1>.txt"
    ]


def test_values_redacted_together_keep_their_bounds_and_share_placeholders() -> None:
    redactor = Redactor(TYPES)
    out = redactor.many(["mail max@example.com", "max@example.com", "nothing here"])
    assert out == ["mail <EMAIL_ADDRESS_1>", "<EMAIL_ADDRESS_1>", "nothing here"]
    assert restore(out[0], redactor.originals) == "mail max@example.com"


def test_a_value_found_once_is_hidden_wherever_it_occurs_as_a_word() -> None:
    redactor = Redactor(TYPES)
    assert redactor.text("Margaret Hamilton called") == "<PERSON_1> called"
    assert redactor.scrub("cc: Margaret Hamilton; MargaretHamiltonX") == "cc: <PERSON_1>; MargaretHamiltonX"


def test_prepare_redacts_id_fields_and_outputs_with_the_text_numbered_first() -> None:
    spec = InputSpec(redact_pii=TYPES)
    prepared = prepare(
        spec,
        "write to a@example.com",
        "b@example.com.eml",
        {"from": "b@example.com", "n": 3},
        {"earlier": {"contact": ["a@example.com"]}},
    )
    assert prepared.text == "write to <EMAIL_ADDRESS_1>"
    assert prepared.doc_id == "<EMAIL_ADDRESS_2>.eml"
    assert prepared.fields == {"from": "<EMAIL_ADDRESS_2>", "n": 3}
    assert prepared.outputs == {"earlier": {"contact": ["<EMAIL_ADDRESS_1>"]}}
    assert prepared.pii == ["EMAIL_ADDRESS"] and set(prepared.originals.values()) == {"a@example.com", "b@example.com"}


def test_without_redaction_prepare_passes_values_through() -> None:
    prepared = prepare(InputSpec(), "x@example.com", "x@example.com.txt", {"f": "x@example.com"})
    assert (prepared.text, prepared.doc_id, prepared.fields, prepared.originals) == (
        "x@example.com",
        "x@example.com.txt",
        {"f": "x@example.com"},
        {},
    )


def test_addresses_on_intranet_domains_are_redacted_too() -> None:
    # presidio's own recognizer drops addresses whose top-level domain is not public: they reached the model
    from steadyflow.validators.pii import redact

    text = "write to jdoe@acme.internal, ops@corp.local or bob.smith@corp.example; a@b.com"
    redaction = redact(text, ["EMAIL_ADDRESS"])
    assert "@" not in redaction.text
    assert sorted(redaction.originals.values()) == sorted(
        ["jdoe@acme.internal", "ops@corp.local", "bob.smith@corp.example", "a@b.com"]
    )
