-- The electricity contract an organisation declares for its nodes' grid energy (a green tariff,
-- a supplier's mix): the factor of its market-based (Scope 2) figures, reported beside the
-- location-based ones and never netted into them. Null: none declared.
alter table organization
    add column market_factor_mg_per_kwh bigint check (market_factor_mg_per_kwh between 0 and 2000000),
    add column market_factor_label text,
    add column market_factor_declared_at timestamptz;
