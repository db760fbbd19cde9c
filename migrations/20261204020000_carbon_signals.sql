-- Carbon by place and hour (DESIGN §4, carbon signals): a node has a carbon zone, and each
-- credited result records the intensity it used (its zone, hour, intensity, kind and source)
-- and the rates that priced it, so that its `kgp3` leaf can be recomputed by anyone.

-- An Electricity Maps zone id. Null for nodes registered before zones: the grid's default zone
-- (GRID_DEFAULT_ZONE), which was the one fixed intensity's zone.
alter table node add column zone text check (zone ~ '^[A-Z][A-Z0-9-]{0,31}$');

-- All present for a kgp3 leaf, all absent for a kgp2 one (credited at the fixed intensity).
alter table proof_leaf
    add column zone text,
    add column intensity_hour timestamptz,
    add column intensity_mg_per_kwh bigint check (intensity_mg_per_kwh >= 0),
    add column intensity_kind text check (intensity_kind in ('average', 'marginal')),
    add column intensity_source text,
    add column price_peur_per_kg bigint check (price_peur_per_kg >= 0),
    add column node_share_percent smallint check (node_share_percent between 0 and 100),
    add constraint proof_leaf_basis_whole check (
        num_nulls(zone, intensity_hour, intensity_mg_per_kwh, intensity_kind, intensity_source,
                  price_peur_per_kg, node_share_percent) in (0, 7));
