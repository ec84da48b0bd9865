"""The contract documents agree with the code: the committed AsyncAPI documents, docs/messages.md and
docs/http.md are what `make docs` generates now; each AsyncAPI document is valid AsyncAPI 3.0; every
example (in the docs and in the AsyncAPI documents) validates as its topic's consumers read it; each
service serves its document at /asyncapi without loading anything from elsewhere.

asyncapi-3.0.0.schema.json is the official schema from the npm package @asyncapi/specs 6.11.1
(`schemas/3.0.0-without-$id.json`, Apache-2.0), kept here so the test needs no network.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import date
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

from kredit_shared.contracts import catalog, messages
from kredit_shared.contracts.examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gen_docs  # noqa: E402


@pytest.fixture(scope="module")
def services():
    return gen_docs.apps()


def test_the_committed_documents_are_what_the_code_generates(services):
    generated = gen_docs.asyncapi_documents(services) | {
        gen_docs.DOCS / "messages.md": gen_docs.messages_markdown(services),
        gen_docs.DOCS / "http.md": gen_docs.http_markdown(services),
    }
    stale = [str(p.relative_to(ROOT)) for p, text in generated.items() if not p.exists() or p.read_text() != text]
    assert not stale, f"{stale} differ from the code: run `make docs` and commit the result"
    assert sorted(p.name for p in (ROOT / "docs" / "asyncapi").iterdir()) == sorted(
        f"{name}.yaml" for name in gen_docs.SERVICES
    ), "a document of a service that no longer exists"


@pytest.mark.parametrize("service", list(gen_docs.SERVICES))
def test_each_asyncapi_document_is_valid_asyncapi_3(service):
    schema = json.loads((Path(__file__).parent / "asyncapi-3.0.0.schema.json").read_text())
    document = yaml.safe_load((ROOT / "docs" / "asyncapi" / f"{service}.yaml").read_text())
    errors = [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in jsonschema_rs.validator_for(schema).iter_errors(document)
    ]
    assert errors == []


def test_the_schema_check_catches_an_invalid_document():
    schema = json.loads((Path(__file__).parent / "asyncapi-3.0.0.schema.json").read_text())
    document = yaml.safe_load((ROOT / "docs" / "asyncapi" / "invoicing.yaml").read_text())
    document["operations"]["erp.customer-invoices:receive"]["action"] = "consume"
    assert not jsonschema_rs.validator_for(schema).is_valid(document)


def _addresses(document: dict, action: str) -> set[str]:
    return {
        document["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for op in document["operations"].values()
        if op["action"] == action
    }


def test_each_document_lists_every_topic_its_service_reads_and_writes_with_their_dead_letter_topics(services):
    for name, app in services.items():
        runtime = app.state.runtime
        document = runtime.asyncapi()
        consumed = {s.topic for s in runtime._subscriptions.values()}
        assert runtime.publications, f"{name} declares no output topic"
        assert _addresses(document, "receive") == consumed
        assert _addresses(document, "send") == set(runtime.publications) | {
            f"{t}.dlq" for t in consumed | set(runtime.publications)
        }


def test_every_message_has_its_key_headers_and_an_example_in_every_document(services):
    for app in services.values():
        document = app.state.runtime.asyncapi()
        for message in document["components"]["messages"].values():
            assert message["bindings"]["kafka"]["key"]["type"] == "string"
            assert message["headers"]["properties"]
            assert message["examples"]
            assert "correlationId" not in message, "records carry no correlation_id header"


def test_the_catalog_covers_every_contract_message_on_its_own_topic():
    concrete = {
        cls
        for cls in _subclasses(messages.ContractMessage)
        if not cls.__name__.startswith("_") and cls is not messages.ContractMessage
    }
    listed = {t for contract in catalog.TOPICS.values() for t in contract.messages}
    assert listed == concrete
    for topic, contract in catalog.TOPICS.items():
        assert all(t.topic == topic for t in contract.messages)
    assert set(EXAMPLES) == concrete


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


@pytest.mark.parametrize("message_type", list(EXAMPLES), ids=lambda t: t.__name__)
def test_each_example_is_keyed_by_the_field_the_catalog_names(message_type):
    example = EXAMPLES[message_type]
    assert example.key() == getattr(example, catalog.topic_of(message_type).keys[message_type])


def _as_consumers_read(topic: str, raw: str) -> BaseModel:
    """What a consumer of `topic` makes of the JSON (strict JSON mode: message_id is required)."""
    return TypeAdapter(catalog.TOPICS[topic].payload).validate_json(raw)


def test_every_example_in_messages_md_validates_as_its_consumers_read_it():
    text = (ROOT / "docs" / "messages.md").read_text()
    blocks = re.findall(r"```json (\w+)\n(.*?)\n```", text, re.S)
    assert sorted(name for name, _ in blocks) == sorted(t.__name__ for t in EXAMPLES)
    by_name = {t.__name__: t for t in EXAMPLES}
    for name, raw in blocks:
        parsed = _as_consumers_read(by_name[name].topic, raw)
        assert type(parsed).__name__ == name
        assert parsed == EXAMPLES[by_name[name]]


def test_every_example_in_the_asyncapi_documents_validates_as_its_consumers_read_it():
    checked = 0
    for path in (ROOT / "docs" / "asyncapi").glob("*.yaml"):
        document = yaml.safe_load(path.read_text())
        for name, message in document["components"]["messages"].items():
            for example in message["examples"]:
                topic = name.split(":", 1)[0].removesuffix(".dlq")  # a dead letter's example is its original
                parsed = _as_consumers_read(topic, json.dumps(example["payload"]))
                if "message-type" in example.get("headers", {}):
                    assert type(parsed).__name__ == example["headers"]["message-type"]
                checked += 1
    assert checked > 30


def test_a_message_without_message_id_or_with_one_that_is_not_a_uuid_is_refused_with_a_clear_reason():
    valid = json.loads(EXAMPLES[messages.CustomerInvoiceIssued].model_dump_json())
    for body, reason in [
        ({k: v for k, v in valid.items() if k != "message_id"}, "message_id is required"),
        (valid | {"message_id": "INV-10020"}, "message_id 'INV-10020' is not a UUID"),
        (valid | {"message_id": 12345678901234567890123456789012}, "is not a UUID string"),
    ]:
        with pytest.raises(ValueError, match=reason):
            _as_consumers_read("erp.customer-invoices", json.dumps(body))


def test_the_invoice_examples_are_what_invoicing_makes_of_the_example_invoice():
    from kredit_invoicing.domain import post_invoice
    from kredit_shared.company_setup import load_company_setup

    posted = post_invoice(EXAMPLES[messages.CustomerInvoiceIssued], load_company_setup())

    def without_id(message: BaseModel) -> dict:
        return message.model_dump(exclude={"message_id"})

    assert without_id(posted.transaction) == without_id(EXAMPLES[messages.CustomerTransactionPosted])
    assert without_id(posted.ledger_voucher) == without_id(EXAMPLES[messages.VoucherPosted])
    assert posted.due_date == date(2015, 7, 25)


async def test_each_service_serves_its_document_offline_at_asyncapi(services):
    for name, app in services.items():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            page = await client.get("/asyncapi")
            as_yaml = await client.get("/asyncapi.yaml")
            as_json = await client.get("/asyncapi.json")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert as_yaml.text == (ROOT / "docs" / "asyncapi" / f"{name}.yaml").read_text()
        assert as_json.json() == yaml.safe_load(as_yaml.text)
        for address in _addresses(as_json.json(), "receive") | _addresses(as_json.json(), "send"):
            assert f"<code>{address}</code>" in page.text
        # Nothing loaded from elsewhere: no script at all, no external stylesheet or image.
        assert "<script" not in page.text
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
