-- Production's first start (docker-entrypoint-initdb.d): the vault and the audit archive live in
-- databases of their own, never in the published one.
CREATE DATABASE veil_vault;
CREATE DATABASE veil_audit;
