-- One database per service, each owned by its own login role (docs/architecture.md: "No service reads
-- another's database"). The postgres image runs this once, on an empty data volume, from
-- /docker-entrypoint-initdb.d (see docker-compose.yml).
--
-- LOCAL DEVELOPMENT ONLY: the passwords are for a docker-compose trial on one machine and match the
-- DATABASE_URLs in deploy/compose/*.local-dev.env. Replace them before anyone else can reach the
-- stack. Real deployments (deploy/base) take each DATABASE_URL from a Kubernetes Secret instead.
-- Names use underscores: a hyphen would need quoting everywhere.

CREATE ROLE invoicing LOGIN PASSWORD 'invoicing-dev';
CREATE DATABASE invoicing OWNER invoicing;
REVOKE ALL ON DATABASE invoicing FROM PUBLIC;

CREATE ROLE settlement LOGIN PASSWORD 'settlement-dev';
CREATE DATABASE settlement OWNER settlement;
REVOKE ALL ON DATABASE settlement FROM PUBLIC;

CREATE ROLE collections LOGIN PASSWORD 'collections-dev';
CREATE DATABASE collections OWNER collections;
REVOKE ALL ON DATABASE collections FROM PUBLIC;

CREATE ROLE ledger_posting LOGIN PASSWORD 'ledger-posting-dev';
CREATE DATABASE ledger_posting OWNER ledger_posting;
REVOKE ALL ON DATABASE ledger_posting FROM PUBLIC;
