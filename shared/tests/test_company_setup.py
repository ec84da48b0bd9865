import pytest
import yaml

from kredit_shared.company_setup import DEMO_SETUP_FILE, SetupError, load_company_setup


def test_the_demo_company_matches_the_contract():
    setup = load_company_setup()
    assert setup.accounting_currency == "USD"
    # The contract's six accounts; the penny difference and over/underpayment accounts settlement posts to;
    # interest income and letter fees (credit and collections); realized exchange gain and loss.
    assert set(setup.main_accounts) == {"110110", "130100", "222200", "401100", "520100", "618900"} | {
        "520200",
        "520300",
        "801100",
        "801200",
        "710100",
        "810100",
    }
    assert setup.exchange_accounts is not None
    assert (setup.exchange_accounts.realized_gain, setup.exchange_accounts.realized_loss) == ("710100", "810100")
    assert setup.settlement.accounts.model_dump() == {
        "cash_discount": "520100",
        "penny_difference": "520200",
        "customer_overpayment_underpayment": "520300",
    }
    assert setup.interest is not None and setup.interest.income_account == "801100"
    assert setup.collection_letters is not None and setup.collection_letters.fee_account == "801200"
    assert setup.customer_posting_profile.write_off_account == "618900"
    assert [c.days for c in setup.discount_chain("2%5D")] == [5, 14]
    assert setup.write_off.reason_code == "BadDebt" and not setup.write_off.separate_sales_tax
    assert [b.label for b in setup.aging_buckets] == ["Current", "1-30", "31-60", "61-90", "91+"]


@pytest.mark.parametrize(
    ("change", "named_field"),
    [
        (lambda d: d["cash_discount_codes"]["2%5D"].update(next_code="9%9D"), "cash_discount_codes.2%5D.next_code"),
        (lambda d: d["customer_posting_profile"].update(write_off_account="999999"), "write_off_account"),
        (lambda d: d.update(accounting_currency="EURO"), "accounting_currency"),
        (lambda d: d["payment_terms"]["Net30"].update(days=-1), "payment_terms.Net30.days"),
        (lambda d: d["write_off"].update(reason_code="Nope"), "write_off.reason_code"),
        (lambda d: d["aging_buckets"].pop(), "aging_buckets"),
        (
            lambda d: d["settlement"]["accounts"].update(penny_difference="529999"),
            "settlement.accounts.penny_difference",
        ),
        (lambda d: d["settlement"].update(cash_discount_administration="Vague"), "cash_discount_administration"),
        (lambda d: d["collection_letters"].update(fee_account="999999"), "collection_letters.fee_account"),
        (lambda d: d["collection_letters"]["sequence"].reverse(), "collection_letters.sequence"),
        (lambda d: d["interest"].update(default_code="9%D"), "interest.default_code"),
        (lambda d: d["interest"]["codes"]["1.5%M"].update(per="Week"), "interest.codes.1.5%M.per"),
    ],
)
def test_an_invalid_setup_names_the_bad_field(tmp_path, change, named_field):
    data = yaml.safe_load(DEMO_SETUP_FILE.read_text())
    change(data)
    path = tmp_path / "setup.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SetupError, match=named_field.replace(".", r"\.")):
        load_company_setup(path)


def test_a_missing_setup_file_is_a_clear_error(tmp_path):
    with pytest.raises(SetupError, match="cannot read"):
        load_company_setup(tmp_path / "missing.yaml")
