# Kredit — one command to run the stack locally, one to run the tests. Both set everything up first.
PYTHON ?= python3
# uv on PATH, else a private copy in .venv-tools (scripts/ensure_uv.sh installs it there; works where
# pip refuses system installs, PEP 668). Worked out once, on first use.
UV = $(eval UV := $(shell PYTHON="$(PYTHON)" sh scripts/ensure_uv.sh))$(UV)

.PHONY: setup run demo test unit handlers e2e lint browser bench chaos fuzz docs migration clean

setup:  ## install uv (if missing) and the locked workspace into .venv, compiled to bytecode
	@PYTHON="$(PYTHON)" sh scripts/ensure_uv.sh >/dev/null
	@$(UV) sync --frozen --quiet --compile-bytecode
	@# Our own sources too (uv compiles site-packages only): where PYTHONDONTWRITEBYTECODE is set (these machines),
	@# nothing else writes .pyc files, and every service start would compile ~2 s of CPU of source again.
	@$(UV) run --frozen python -m compileall -q shared/src services scripts >/dev/null

run: setup  ## broker + four services on SQLite under ./data; Ctrl-C stops everything
	@$(UV) run --frozen python scripts/run_local.py

demo: setup  ## publish the source scenarios into the running stack
	@$(UV) run --frozen python scripts/demo.py

lint: setup  ## ruff check and format, mypy (strict on domains, money, contracts), and the architecture rules: pure domains, independent services
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy
	@$(UV) run --frozen lint-imports

test: setup lint browser  ## the whole suite, against a real broker and real databases
	@$(UV) run --frozen pytest $(PYTEST_ARGS)

unit: setup  ## the pure domain tests alone (no broker, no database; property tests included, about a minute)
	@$(UV) run --frozen pytest services/invoicing/tests/unit services/settlement/tests/unit \
		services/collections/tests/unit services/ledger-posting/tests/unit $(PYTEST_ARGS)

handlers: setup  ## every service's handlers on an in-memory SQLite database, no broker (a few seconds; serial: workers take longer to start)
	@$(UV) run --frozen pytest -n 0 services/invoicing/tests/handlers services/settlement/tests/handlers \
		services/collections/tests/handlers services/ledger-posting/tests/handlers \
		shared/tests/test_handler_database.py $(PYTEST_ARGS)

e2e: setup browser  ## the tests that start whole stacks as processes (end to end, crash recovery, the browser)
	@$(UV) run --frozen pytest tests/e2e tests/browser $(PYTEST_ARGS)

browser:  ## Debian's chromium for the browser tests, when absent and installable (else those tests skip, saying why)
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the browser tests ..."; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium could not be installed: the browser tests will be skipped"; \
	fi

bench: setup  ## the pipeline against the raw broker hop (BENCH_ARGS), then ledger-posting alone; SQLite and PostgreSQL
	@$(UV) run --frozen python scripts/bench.py $(BENCH_ARGS)
	@$(UV) run --frozen python scripts/bench_ledger.py $(BENCH_LEDGER_ARGS)

chaos: setup  ## kill services under load, then check the books (CHAOS_ARGS="--messages 5000 --postgres"); not in `make test`
	@$(UV) run --frozen python scripts/chaos.py $(CHAOS_ARGS)

fuzz: setup  ## malformed messages on every input topic (FUZZ_ARGS), then HTTP fuzzing if scripts/fuzz_http.py exists
	@rc=0; $(UV) run --frozen python scripts/fuzz.py $(FUZZ_ARGS) || rc=1; \
	if [ -f scripts/fuzz_http.py ]; then $(UV) run --frozen python scripts/fuzz_http.py $(FUZZ_HTTP_ARGS) || rc=1; fi; \
	exit $$rc

docs: setup  ## regenerate docs/asyncapi/*.yaml, docs/messages.md and docs/http.md from the code
	@$(UV) run --frozen python scripts/gen_docs.py
migration: setup  ## autogenerate the next schema revision from the models: make migration SERVICE=invoicing MSG="add x"
	@if [ -z "$(SERVICE)" ] || [ -z "$(MSG)" ]; then echo 'usage: make migration SERVICE=<invoicing|settlement|collections|ledger-posting> MSG="what changes"'; exit 2; fi
	@$(UV) run --frozen python scripts/migrations.py new $(SERVICE) -m "$(MSG)"

clean:
	rm -rf data .venv .venv-tools
