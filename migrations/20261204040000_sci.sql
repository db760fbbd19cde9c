-- Software Carbon Intensity per task (ISO/IEC 21031): a node may declare what making it emitted
-- (null: the grid's default, GRID_EMBODIED_KG_CO2E), and a completed task keeps its SCI, the
-- operational and embodied parts apart, in ng CO₂e (null for tasks completed before).
alter table node add column embodied_g_co2e bigint check (embodied_g_co2e between 1 and 10000000);
alter table task
    add column sci_operational_ng bigint check (sci_operational_ng >= 0),
    add column sci_embodied_ng bigint check (sci_embodied_ng >= 0);
