"""The company setup: one declarative YAML file per deployment, validated at start-up.

Each service reads the part it owns; all of them refuse to start on an invalid file, with a
message naming the bad field.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kredit_shared.contracts.messages import Percent
from kredit_shared.currencies import ExchangeRate, minor_units, rate_on, unsupported_reason
from kredit_shared.errors import describe_validation_error
from kredit_shared.money import Amount, Currency

DEMO_SETUP_FILE = Path(str(files("kredit_shared").joinpath("demo-company.yaml")))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MainAccount(_Strict):
    name: str
    type: Literal["Asset", "Liability", "Equity", "Revenue", "Expense"]


class CustomerPostingProfile(_Strict):
    summary_account: str
    write_off_account: str


class PaymentTerms(_Strict):
    days: int = Field(ge=0)


class CashDiscountCode(_Strict):
    percent: Percent
    days: int = Field(ge=0)
    account: str
    next_code: str | None = None


class SettlementPriorityRule(_Strict):
    """One criterion of the settlement priority (D365's *Settlement priority* page)."""

    criterion: Literal["TransactionType", "DueDate", "TransactionDate", "CashDiscountDate", "Amount", "Voucher"]
    direction: Literal["Ascending", "Descending"] = "Ascending"
    order: list[str] | None = None  # TransactionType only: the document types, first settled first


class SettlementAccounts(_Strict):
    """D365's *Accounts for automatic transactions* as settlement uses them."""

    cash_discount: str | None = None  # for discounts of transactions that name no discount account
    penny_difference: str | None = None
    customer_overpayment_underpayment: str | None = None


class SettlementParameters(_Strict):
    """The seed of settlement's parameters (changed later through its API) and its accounts."""

    calculate_cash_discounts_for_partial_payments: bool = True
    calculate_cash_discounts_for_credit_notes: bool = False
    maximum_penny_difference: Amount = Decimal("0.00")
    maximum_overpayment_or_underpayment: Amount = Decimal("0.00")
    cash_discount_administration: Literal["Specific", "Unspecific"] = "Specific"
    automatic_settlement: bool = True
    prioritize_settlement: bool = False
    use_priority_for_automatic_settlements: bool = False
    settlement_priority: list[SettlementPriorityRule] = []
    accounts: SettlementAccounts = SettlementAccounts()


class JournalName(_Strict):
    description: str
    batch_prefix: str
    voucher_prefix: str


class WriteOffParameters(_Strict):
    journal_name: str
    reason_code: str
    separate_sales_tax: bool = False
    # Separation of duties: whoever requested a write-off may not post its journal (ledger-posting
    # answers 403). Set in the setup file only, not over the parameters API.
    four_eyes_write_off: bool = True


class AgingBucket(_Strict):
    label: str
    max_days: int | None = None  # inclusive upper bound of days past due; None = open-ended


class CollectionLetterLevel(_Strict):
    """One step of the collection letter sequence (D365: collection letter code and its setup)."""

    code: str  # e.g. Reminder; each letter names it
    days_overdue: int = Field(ge=1)  # sent once an invoice is this many days past its due date
    fee: Amount = Decimal("0.00")  # posted as a CollectionLetterFee customer transaction; 0.00 = none
    text: str = ""  # the paragraph the letter opens with


class CollectionLetterSetup(_Strict):
    fee_account: str  # the main account the fees are credited to (debit: the customer summary account)
    sequence: list[CollectionLetterLevel] = Field(min_length=1)


class InterestCode(_Strict):
    """An interest code (D365: Credit and collections > Interest > Set up interest codes)."""

    description: str = ""
    percent: Percent
    per: Literal["Month", "Year"]  # the percent is per month or per year (see docs/credit-and-collections.md)
    minimum_amount: Amount = Decimal("0.00")  # a note below this is not created (interest keeps accruing)
    grace_days: int = Field(default=0, ge=0)  # an invoice this many days overdue or less bears no interest


class InterestSetup(_Strict):
    income_account: str  # credited with the interest (debit: the customer summary account)
    default_code: str
    codes: dict[str, InterestCode] = Field(min_length=1)


class ExchangeRatePeriod(_Strict):
    """A rate (accounting-currency units per one unit of the currency) from a date until the next one."""

    from_date: date
    rate: ExchangeRate


class ExchangeAccounts(_Strict):
    """Where settlement and write-offs post the exchange difference between two rates (D365's
    *Currency revaluation accounts*, realized)."""

    realized_gain: str
    realized_loss: str


class CompanySetup(_Strict):
    company: str
    accounting_currency: Currency
    main_accounts: dict[str, MainAccount]
    customer_posting_profile: CustomerPostingProfile
    default_revenue_account: str
    sales_tax_account: str
    default_bank_account: str
    payment_terms: dict[str, PaymentTerms]
    cash_discount_codes: dict[str, CashDiscountCode]
    settlement: SettlementParameters = SettlementParameters()
    journal_names: dict[str, JournalName]
    write_off: WriteOffParameters
    reason_codes: dict[str, str]
    aging_buckets: list[AgingBucket] = Field(min_length=1)
    # Credit and collections management (collections): optional, the features answer "not set up" without.
    collection_letters: CollectionLetterSetup | None = None
    interest: InterestSetup | None = None
    # Foreign currencies (docs/currencies.md): the rates a document that states none is booked at, and
    # where realized exchange differences go. Without the accounts, foreign documents are refused.
    exchange_rates: dict[Currency, list[ExchangeRatePeriod]] = {}
    exchange_accounts: ExchangeAccounts | None = None

    @model_validator(mode="after")
    def _references_resolve(self) -> CompanySetup:
        def account(field: str, value: str) -> None:
            if value not in self.main_accounts:
                raise ValueError(f"{field}: unknown main account {value!r}")

        account("customer_posting_profile.summary_account", self.customer_posting_profile.summary_account)
        account("customer_posting_profile.write_off_account", self.customer_posting_profile.write_off_account)
        account("default_revenue_account", self.default_revenue_account)
        account("sales_tax_account", self.sales_tax_account)
        account("default_bank_account", self.default_bank_account)
        for name, value in self.settlement.accounts:
            if value is not None:
                account(f"settlement.accounts.{name}", value)
        for code, discount in self.cash_discount_codes.items():
            account(f"cash_discount_codes.{code}.account", discount.account)
            seen = {code}
            next_code = discount.next_code
            while next_code is not None:
                if next_code not in self.cash_discount_codes:
                    raise ValueError(f"cash_discount_codes.{code}.next_code: unknown code {next_code!r}")
                if next_code in seen:
                    raise ValueError(f"cash_discount_codes.{code}.next_code: the chain loops back to {next_code!r}")
                seen.add(next_code)
                next_code = self.cash_discount_codes[next_code].next_code
        if self.write_off.journal_name not in self.journal_names:
            raise ValueError(f"write_off.journal_name: unknown journal name {self.write_off.journal_name!r}")
        if self.write_off.reason_code not in self.reason_codes:
            raise ValueError(f"write_off.reason_code: unknown reason code {self.write_off.reason_code!r}")
        if (letters := self.collection_letters) is not None:
            account("collection_letters.fee_account", letters.fee_account)
            days = [level.days_overdue for level in letters.sequence]
            if days != sorted(set(days)):
                raise ValueError("collection_letters.sequence: days_overdue must increase from level to level")
            if len({level.code for level in letters.sequence}) != len(days):
                raise ValueError("collection_letters.sequence: every level needs its own code")
        if (interest := self.interest) is not None:
            account("interest.income_account", interest.income_account)
            if interest.default_code not in interest.codes:
                raise ValueError(f"interest.default_code: unknown interest code {interest.default_code!r}")
        if self.exchange_accounts is not None:
            account("exchange_accounts.realized_gain", self.exchange_accounts.realized_gain)
            account("exchange_accounts.realized_loss", self.exchange_accounts.realized_loss)
        if (units := minor_units(self.accounting_currency)) > 2:
            raise ValueError(
                f"accounting_currency: {self.accounting_currency} has {units} decimal places; accounting-currency "
                "amounts are kept with two (docs/currencies.md)"
            )
        for currency, periods in self.exchange_rates.items():
            if (reason := unsupported_reason(currency)) is not None:
                raise ValueError(f"exchange_rates.{currency}: {reason}")
            if currency == self.accounting_currency:
                raise ValueError(f"exchange_rates.{currency}: the accounting currency is always at rate 1")
            starts = [p.from_date for p in periods]
            if len(set(starts)) != len(starts):
                raise ValueError(f"exchange_rates.{currency}: two rates from the same date")
        bounds = [b.max_days for b in self.aging_buckets]
        if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
            raise ValueError("aging_buckets: only the last bucket may be open-ended, and it must be")
        inner = [b for b in bounds[:-1] if b is not None]  # all of them: checked just above
        if inner != sorted(set(inner)):
            raise ValueError("aging_buckets: max_days must increase from bucket to bucket")
        return self

    def exchange_rate(self, currency: str, on: date) -> Decimal | None:
        """The setup's rate for `currency` on a date (1 for the accounting currency); None: none set up."""
        if currency == self.accounting_currency:
            return Decimal(1)
        return rate_on(self.exchange_rates.get(currency, []), on)

    def discount_chain(self, code: str) -> list[CashDiscountCode]:
        """The code followed by its chain of next codes (e.g. 2%5D then 1%14D)."""
        chain = [self.cash_discount_codes[code]]
        while chain[-1].next_code is not None:
            chain.append(self.cash_discount_codes[chain[-1].next_code])
        return chain


class SetupError(Exception):
    """The setup file is missing or invalid; the message names the file and the bad field."""


def load_company_setup(path: Path | str | None = None) -> CompanySetup:
    path = Path(path) if path else DEMO_SETUP_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SetupError(f"company setup {path}: cannot read the file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SetupError(f"company setup {path}: not valid YAML ({e})") from None
    try:
        return CompanySetup.model_validate(raw)
    except ValidationError as e:
        raise SetupError(f"company setup {path}: {describe_validation_error(e, whole='setup')}") from None
