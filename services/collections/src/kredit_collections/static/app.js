// The write-off dialog shows what will be written off before it is sent: the whole balance, the
// marked transactions or one invoice. Everything else on the pages is plain HTML forms.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("write-off-form");
  if (!form) return;
  const preview = document.getElementById("write-off-preview");
  const amount = document.getElementById("write-off-amount");
  const list = document.getElementById("write-off-vouchers");
  const cents = (text) => Math.round(parseFloat(text) * 100);
  const money = (c) => (c < 0 ? "-" : "") + (Math.abs(c) / 100).toLocaleString("en-US", {minimumFractionDigits: 2});
  const whole = preview.dataset.all.split(";").filter(Boolean).map((p) => p.split("="));

  function chosen() {
    const scope = form.querySelector("input[name=scope]:checked").value;
    if (scope === "marked") {
      return [...document.querySelectorAll("input[name=voucher]:checked")].map((c) => [c.value, c.dataset.balance]);
    }
    if (scope === "invoice") {
      const option = form.querySelector("select[name=invoice_id]").selectedOptions[0];
      return option ? [[option.dataset.voucher, option.dataset.balance]] : [];
    }
    return whole;
  }
  function update() {
    const items = chosen();
    amount.textContent = money(items.reduce((sum, [, b]) => sum + cents(b), 0));
    list.textContent = items.length ? items.map(([v, b]) => `${v} ${money(cents(b))}`).join(", ") : "nothing selected";
  }
  document.querySelectorAll("input[name=voucher]").forEach((c) => c.addEventListener("change", () => {
    form.querySelector("input[name=scope][value=marked]").checked = true;
    update();
  }));
  form.querySelector("select[name=invoice_id]").addEventListener("change", () => {
    form.querySelector("input[name=scope][value=invoice]").checked = true;
    update();
  });
  form.addEventListener("change", update);
  update();
});
